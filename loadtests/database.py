"""The queries that check the proof's ledger against the rows in PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.core.urls import plain_dsn


@dataclass(frozen=True)
class RowCheck:
    users_total: int
    items_total: int
    users_present: set[str]
    items_present: set[str]
    users_fullname: dict[str, str | None]
    items_added: dict[str, datetime]


async def _inspect(url: str, users: list[str], items: list[str], hot: list[str]) -> RowCheck:
    connection = await asyncpg.connect(plain_dsn(url), timeout=10)
    try:
        users_total = int(await connection.fetchval("SELECT count(*) FROM users"))
        items_total = int(await connection.fetchval("SELECT count(*) FROM items"))
        user_rows = await connection.fetch(
            "SELECT pubid::text AS pubid, fullname FROM users WHERE pubid = ANY($1::uuid[])",
            users,
        )
        item_rows = await connection.fetch(
            "SELECT pubid::text AS pubid, added FROM items WHERE pubid = ANY($1::uuid[])",
            sorted(set(items) | set(hot)),
        )
    finally:
        await connection.close()
    return RowCheck(
        users_total=users_total,
        items_total=items_total,
        users_present={row["pubid"] for row in user_rows},
        items_present={row["pubid"] for row in item_rows if row["pubid"] in set(items)},
        users_fullname={row["pubid"]: row["fullname"] for row in user_rows},
        items_added={row["pubid"]: row["added"] for row in item_rows},
    )


def inspect(url: str, *, users: set[str], items: set[str], hot_items: set[str]) -> RowCheck:
    """Which of these pubids have rows (one query per table), with the hot rows' values."""
    return asyncio.run(_inspect(url, sorted(users), sorted(items), sorted(hot_items)))


def table_counts(url: str) -> tuple[int, int]:
    check = inspect(url, users=set(), items=set(), hot_items=set())
    return check.users_total, check.items_total
