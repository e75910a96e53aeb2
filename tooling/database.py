"""Create, migrate, read and drop databases: the one helper tests, the load-test proof, the
benchmarks and `./dev` share. Migrations run through Alembic exactly as deployments run them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from service.core.urls import plain_dsn
from tooling.postgres import PROJECT_ROOT


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Rows straight from PostgreSQL, bypassing the service: what is really stored."""
    connection = await asyncpg.connect(plain_dsn(url), timeout=10)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def fetch_value(url: str, query: str, *args: object) -> object:
    """The first column of the first row (None without rows), from synchronous code."""
    rows = asyncio.run(fetch(url, query, *args))
    return rows[0][0] if rows else None


def execute(url: str, statement: str) -> None:
    """One statement on a connection of its own, outside any transaction block (as CREATE
    DATABASE needs), from synchronous code."""
    fetch_value(url, statement)


@contextmanager
def fresh_database(
    server: str,
    *,
    prefix: str = "test",
    migrate_to_head: bool = True,
    say: Callable[[str], None] = lambda message: None,
) -> Iterator[str]:
    """A new, uniquely named database on `server`, migrated to head unless told not to;
    dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    execute(server, f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        say(f"database {name} created")
        if migrate_to_head:
            migrate(url)
        yield url
    finally:
        execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
