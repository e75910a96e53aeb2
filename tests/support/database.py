"""The PostgreSQL server of a test session: the one DATABASE_URL names, or an embedded one
shared by concurrent sessions (each then creates its own database: tooling.database)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from tooling.postgres import PROJECT_ROOT, EmbeddedPostgres

TEST_DATA_DIR = PROJECT_ROOT / ".pgdata" / "test"


@contextmanager
def server_url() -> Iterator[str]:
    """DATABASE_URL's server, or the embedded one in .pgdata/test. Several test sessions
    may share the embedded server: each holds a shared lock while it uses it, and whoever
    finishes last (and so can lock exclusively) stops it."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    TEST_DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(TEST_DATA_DIR, log=lambda message: None)
    with open(TEST_DATA_DIR.parent / "test.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one session at a time starts (or adopts) it
        url = server.start()
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield url
        finally:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another session still uses the server; it will stop it
            else:
                server.stop()
