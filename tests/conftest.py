from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.core.settings import Settings
from tests.support.processes import TEST_ENV
from tooling.database import fresh_database
from tooling.gunicorn import Gunicorn, run_gunicorn
from tooling.postgres import PROJECT_ROOT, provided_database


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The PostgreSQL server: DATABASE_URL's, or an embedded one in .pgdata/test (shared
    by concurrent test sessions)."""
    with provided_database(None, lambda _: None, PROJECT_ROOT / ".pgdata" / "test") as url:
        yield url


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test session's own, migrated to head."""
    with fresh_database(postgres_server_url) as url:
        yield url


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "access_log": False,
        # The settings real gunicorn processes under test get (TEST_ENV explains them).
        **{key.lower(): value for key, value in TEST_ENV.items()},
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def gunicorn_server(database_url: str) -> Iterator[Gunicorn]:
    """Four real UvicornWorker processes under a real gunicorn master, on loopback."""
    with run_gunicorn(database_url, workers=4, env=TEST_ENV) as server:
        yield server


@pytest.fixture(params=["in-process", "gunicorn"])
async def client(request: pytest.FixtureRequest, app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The API, both in-process (fast, precise tracebacks) and through a real 4-worker
    gunicorn on loopback (what users run)."""
    if request.param == "gunicorn":
        server: Gunicorn = request.getfixturevalue("gunicorn_server")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield http
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
