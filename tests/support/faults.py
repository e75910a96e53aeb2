"""A PostgreSQL of the test's own, so a test may restart, stop or freeze it."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tooling.database import migrate, with_database
from tooling.postgres import EmbeddedPostgres
from tooling.processes import children_of


@dataclass
class OwnPostgres:
    server: EmbeddedPostgres
    database_url: str

    def log(self) -> str:
        return self.server.log_file.read_text(errors="replace")

    def processes(self) -> list[int]:
        postmaster = self.server.postmaster_pid()
        assert postmaster is not None
        return [postmaster, *children_of(postmaster)]

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster and every backend: a database that hangs, not one that
        refuses."""
        frozen = self.processes()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(frozen: list[int]) -> None:
        for pid in frozen:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


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
def own_postgres(data_dir: Path, **settings: str) -> Iterator[OwnPostgres]:
    server = EmbeddedPostgres(data_dir, extra_settings=settings, log=lambda _: None)
    url = server.start()
    try:
        database_url = with_database(url, "postgres")
        migrate(database_url)
        yield OwnPostgres(server, database_url)
    finally:
        server.destroy()
