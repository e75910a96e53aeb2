"""A real PostgreSQL for the test session: the one DATABASE_URL names, or an embedded one.

Each session creates its own database (so runs never share rows), migrates it with Alembic
exactly as deployments do, and drops it at the end."""

from __future__ import annotations

import asyncio
import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

from service.core.urls import plain_dsn, with_database
from service.dev.postgres import EmbeddedPostgres

__all__ = [
    "alembic_config",
    "fetch",
    "fresh_database",
    "plain_dsn",
    "server_url",
    "with_database",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA_DIR = PROJECT_ROOT / ".pgdata" / "test"


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Rows straight from PostgreSQL, bypassing the service: what is really stored."""
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


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


@contextmanager
def fresh_database(server: str, *, migrate: bool = True) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    url = with_database(server, name)
    try:
        if migrate:
            command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
