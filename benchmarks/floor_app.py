"""The floor: a minimal ASGI app (no framework, no ORM) for the same one-row read.

`GET /items/{pubid}` answers the item as JSON from one prepared statement on a raw asyncpg
pool (10 connections per worker, like the service's default pool). The statement is
prepared once per connection when the pool opens it, then reused from asyncpg's
per-connection statement cache (a PreparedStatement object cannot outlive one acquire).
With FLOOR_MODE=static it answers a constant JSON body of the same shape and never touches
the database. It does not verify the bearer token: the floor is the cost of HTTP + one
query + JSON, nothing more.

Served as `benchmarks.floor_app:create_app()` by the same gunicorn + ServiceWorker stack as
the service (its flags in servers.py).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

ITEM_SQL = (
    "SELECT i.pubid, i.name, i.added, u.pubid AS user_pubid "
    "FROM items AS i JOIN users AS u ON u.id = i.user_id WHERE i.pubid = $1"
)
POOL_SIZE = 10
_ITEMS_PREFIX = "/items/"
_JSON_HEADERS = [(b"content-type", b"application/json")]
STATIC_BODY = json.dumps(
    {
        "pubid": "00000000-0000-4000-8000-000000000001",
        "name": "static",
        "added": "2026-01-01T00:00:00+00:00",
        "user_pubid": "00000000-0000-4000-8000-000000000002",
    }
).encode()


async def _prepare(connection: Any) -> None:
    """Prepare the statement into the connection's cache before the first request."""
    await connection.fetchrow(ITEM_SQL, uuid.UUID(int=0))


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> App:
    """FLOOR_MODE=static: no database at all; otherwise DATABASE_URL (SQLAlchemy or libpq)."""
    static = os.environ.get("FLOOR_MODE", "asyncpg") == "static"
    url = os.environ.get("DATABASE_URL", "").replace("postgresql+asyncpg://", "postgresql://", 1)
    pool: Any = None

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        nonlocal pool
        if scope["type"] == "lifespan":  # startup, then shutdown
            while (await receive())["type"] == "lifespan.startup":
                if not static:
                    pool = await asyncpg.create_pool(
                        url, min_size=POOL_SIZE, max_size=POOL_SIZE, init=_prepare
                    )
                await send({"type": "lifespan.startup.complete"})
            if pool is not None:
                await pool.close()
            return await send({"type": "lifespan.shutdown.complete"})
        path: str = scope["path"]
        if not path.startswith(_ITEMS_PREFIX):
            status = 200 if path in {"/livez", "/readyz"} else 404
            return await _respond(send, status, b'{"status":"ok"}' if status == 200 else b"{}")
        if pool is None:
            return await _respond(send, 200, STATIC_BODY)
        try:
            pubid = uuid.UUID(path[len(_ITEMS_PREFIX) :])
        except ValueError:
            return await _respond(send, 422, b'{"detail":"invalid id"}')
        async with pool.acquire() as connection:
            row = await connection.fetchrow(ITEM_SQL, pubid)
        if row is None:
            return await _respond(send, 404, b'{"detail":"Item not found"}')
        body = {
            "pubid": str(row["pubid"]),
            "name": row["name"],
            "added": row["added"].isoformat(),
            "user_pubid": str(row["user_pubid"]),
        }
        await _respond(send, 200, json.dumps(body).encode())

    return app
