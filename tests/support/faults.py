"""Faults on purpose: the real app plus routes that misbehave (started through
gunicorn.conf.py with APP_MODULE=tests.support.faults:faulty_app()), and a PostgreSQL of
the test's own, so a test may restart, stop or freeze it."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI

from service.app import create_app
from tooling.database import migrate
from tooling.postgres import EmbeddedPostgres
from tooling.processes import children_of


def faulty_app() -> FastAPI:
    app = create_app()

    @app.get("/_test/block")
    async def block(seconds: float) -> dict[str, float]:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point of this route
        return {"slept": seconds}

    @app.get("/_test/crash")
    async def crash() -> None:
        raise RuntimeError("secret internal detail: /etc/service/config")

    return app


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
