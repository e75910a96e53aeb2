"""One statement per authenticated request whose work is one statement: the caller check
(token's user, live session) folds into the route's own statement. Counted on the app's
real engine against the real database, per request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.support.api import Account, add_item, signup


@contextmanager
def counted_statements(app: FastAPI) -> Iterator[list[str]]:
    """Every statement the app sends to PostgreSQL while the block runs."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])  # (conn, cursor, statement, parameters, context, many)

    engine = app.state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
async def in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def one_statement(
    app: FastAPI, client: httpx.AsyncClient, method: str, path: str, account: Account, **kw: Any
) -> httpx.Response:
    with counted_statements(app) as statements:
        response = await client.request(method, path, headers=account.auth, **kw)
    assert len(statements) == 1, f"{method} {path}: {len(statements)} statements {statements}"
    assert "auth_sessions" in statements[0], f"{method} {path}: no session check in the SQL"
    return response


async def test_each_authenticated_route_is_one_statement(
    app: FastAPI, in_process: httpx.AsyncClient
) -> None:
    owner = await signup(in_process)
    other = await signup(in_process)
    item = await add_item(in_process, owner, "lamp")
    item_path = f"/items/{item['pubid']}"

    async def check(
        method: str, path: str, status: int, account: Account = owner, **kw: Any
    ) -> None:
        response = await one_statement(app, in_process, method, path, account, **kw)
        assert response.status_code == status, (method, path, response.text)

    await check("GET", item_path, 200)
    await check("GET", item_path, 404, other)  # another user's item: the same one statement
    await check("GET", "/items", 200)
    await check("POST", "/items", 201, json={"name": "desk", "user_pubid": owner.pubid})
    await check("PUT", item_path, 200, json={"added": "2024-05-01T12:00:00Z"})
    await check("PUT", f"/users/{owner.pubid}", 200, json={"fullname": "Owner"})
    await check("DELETE", item_path, 204)
    await check("POST", "/auth/logout", 204)
    # The session has ended: the next request is refused inside its one statement.
    await check("GET", "/items", 401)


async def test_unauthenticated_read_is_one_statement(
    app: FastAPI, in_process: httpx.AsyncClient
) -> None:
    owner = await signup(in_process)
    with counted_statements(app) as statements:
        response = await in_process.get(f"/users/{owner.pubid}")
    assert response.status_code == 200
    assert len(statements) == 1, statements
