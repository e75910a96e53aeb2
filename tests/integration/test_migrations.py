from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from service.core.urls import plain_dsn
from tooling.database import alembic_config, fresh_database


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


def test_upgrade_check_downgrade_upgrade(postgres_server_url: str) -> None:
    with fresh_database(postgres_server_url, migrate_to_head=False) as url:
        config = alembic_config(url)
        command.upgrade(config, "head")
        assert {"users", "items", "auth_sessions", "login_failures", "alembic_version"} <= (
            asyncio.run(_tables(url))
        )
        command.check(config)  # raises if the models drifted from the revisions
        command.downgrade(config, "base")
        assert asyncio.run(_tables(url)) == {"alembic_version"}
        command.upgrade(config, "head")
        assert {"users", "items"} <= asyncio.run(_tables(url))
