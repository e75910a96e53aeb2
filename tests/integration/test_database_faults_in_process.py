"""The unit of work and the 503 paths, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from service.app import create_app
from service.core.db import commit_with_retry
from service.core.sqlstates import DEADLOCK_DETECTED
from tests.conftest import make_settings
from tests.support.api import signup
from tooling.postgres import free_port


async def _client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def _db_errors(kind: str) -> float:
    """In-process tests use prometheus_client's default registry (no multiprocess dir)."""
    return REGISTRY.get_sample_value("db_errors_total", {"kind": kind}) or 0.0


@pytest.fixture
async def unreachable_client() -> AsyncIterator[httpx.AsyncClient]:
    dead_url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"
    app = create_app(make_settings(dead_url, db_connect_timeout_seconds=1, retry_after_seconds=7))
    async for http in _client_for(app):
        yield http


async def test_database_down_means_fast_503_with_retry_after(
    unreachable_client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await unreachable_client.get("/users")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"  # RETRY_AFTER_SECONDS
    assert response.json()["detail"] == "Service temporarily unavailable, retry later"
    assert (await unreachable_client.get("/livez")).status_code == 200
    ready = await unreachable_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["retry-after"] == "7"


async def test_pool_exhaustion_is_503_within_the_pool_timeout(database_url: str) -> None:
    app = create_app(make_settings(database_url, db_pool_size=1, db_pool_timeout_seconds=0.5))
    async for http in _client_for(app):
        engine = app.state.database.engine
        counted_before = _db_errors("pool_timeout")
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            started = time.monotonic()
            response = await http.get("/users")
            waited = time.monotonic() - started
            assert (await http.get("/livez")).status_code == 200
        assert response.status_code == 503
        assert response.json()["reason"] == "pool_timeout"
        assert "retry-after" in response.headers
        assert 0.4 < waited < 2.5
        assert _db_errors("pool_timeout") == counted_before + 1
        assert (await http.get("/users")).status_code == 200


async def test_statement_timeout_is_503(database_url: str, client: httpx.AsyncClient) -> None:
    app = create_app(make_settings(database_url, db_statement_timeout_ms=200))
    async for http in _client_for(app):
        account = await signup(http)
        # Lock the user's row elsewhere so the update waits past the statement timeout.
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as blocker:
                await blocker.execute(
                    text("SELECT 1 FROM users WHERE pubid = :p FOR UPDATE"), {"p": account.pubid}
                )
                response = await http.put(
                    f"/users/{account.pubid}", json={"fullname": "x"}, headers=account.auth
                )
        finally:
            await engine.dispose()
        assert response.status_code == 503
        assert response.json()["reason"] == "statement_timeout"


async def test_real_deadlocks_are_retried_until_both_commit(database_url: str) -> None:
    """Two transactions lock rows in opposite order; PostgreSQL kills one with 40P01 and
    commit_with_retry runs it again."""
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    retries: list[str] = []
    table = f"deadlock_probe_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.begin() as setup:
            await setup.execute(text(f"CREATE TABLE {table} (id int primary key, v int)"))
            await setup.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
        both_hold_first_lock = asyncio.Barrier(2)

        async def cross(first: int, second: int, value: int) -> None:
            async with sessions() as session:
                attempt = 0

                async def work(s: AsyncSession = session) -> None:
                    nonlocal attempt
                    attempt += 1
                    await s.execute(
                        text(f"UPDATE {table} SET v = :v WHERE id = :id"),
                        {"v": value, "id": first},
                    )
                    if attempt == 1:
                        await both_hold_first_lock.wait()
                    await s.execute(
                        text(f"UPDATE {table} SET v = :v WHERE id = :id"),
                        {"v": value, "id": second},
                    )

                await commit_with_retry(session, work, attempts=5, on_retry=retries.append)

        await asyncio.wait_for(asyncio.gather(cross(1, 2, 10), cross(2, 1, 20)), timeout=20)
        async with engine.connect() as check:
            values = (await check.execute(text(f"SELECT v FROM {table} ORDER BY id"))).all()
        assert retries == [DEADLOCK_DETECTED]
        # Whichever committed last wrote both rows: the final state is one whole write.
        assert {row.v for row in values} in ({10}, {20})
    finally:
        async with engine.begin() as cleanup:
            await cleanup.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()
