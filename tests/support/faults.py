"""A PostgreSQL of the test's own, so a test may restart, stop or freeze it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tooling.database import migrate
from tooling.postgres import EmbeddedPostgres
from tooling.processes import children_of


@dataclass
class OwnPostgres:
    server: EmbeddedPostgres
    database_url: str

    def log(self) -> str:
        return self.server.log_file.read_text(errors="replace")

    def processes(self) -> list[int]:
        """The postmaster and its backends (to freeze with SIGSTOP: a database that hangs,
        not one that refuses)."""
        postmaster = self.server.postmaster_pid()
        assert postmaster is not None
        return [postmaster, *children_of(postmaster)]


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
def own_postgres() -> Iterator[OwnPostgres]:
    with postgres_scratch() as scratch:
        server = EmbeddedPostgres(scratch / "pg", log=lambda _: None)
        try:
            url = server.start()
            migrate(url)
            yield OwnPostgres(server, url)
        finally:
            server.destroy()
