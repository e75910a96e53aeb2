"""A PostgreSQL of the test's own, so a test may restart, stop or freeze it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tooling.database import migrate
from tooling.postgres import EmbeddedPostgres
from tooling.processes import children_of


@contextmanager
def postgres_scratch() -> Iterator[Path]:
    """A directory for an embedded server's data, outside pytest's tmp_path. Run as root,
    the server runs as its own user and reaches its data through o+x on every ancestor; but
    each pytest session that starts (another run on the same machine, as the same user)
    strips group and other bits from /tmp/pytest-of-<user>. Seen: initdb PANIC "could not
    open file .../global/pg_control: Permission denied" while four other sessions ran."""
    with tempfile.TemporaryDirectory(prefix="test-postgres-") as scratch:
        yield Path(scratch)


@contextmanager
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """An embedded server whose `postgres` database is migrated, destroyed afterwards."""
    with postgres_scratch() as scratch:
        server = EmbeddedPostgres(scratch / "pg", log=lambda _: None)
        try:
            migrate(server.start())
            yield server
        finally:
            server.destroy()


def server_processes(server: EmbeddedPostgres) -> list[int]:
    """The postmaster and its backends: SIGSTOP them for a database that hangs rather than
    refuses."""
    postmaster = server.postmaster_pid()
    assert postmaster is not None
    return [postmaster, *children_of(postmaster)]
