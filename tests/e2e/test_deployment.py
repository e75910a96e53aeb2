"""What gunicorn.conf.py guarantees: per-worker pools after the fork (preload or not), and a
clear refusal, never a crash loop, for configurations that cannot work."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api import signup
from tests.support.faults import postgres_scratch
from tests.support.processes import TEST_ENV
from tooling.database import fetch, fresh_database
from tooling.gunicorn import GUNICORN, gunicorn_env, run_gunicorn
from tooling.postgres import PROJECT_ROOT, EmbeddedPostgres

pytestmark = pytest.mark.gunicorn


async def _application_names(database_url: str) -> set[str]:
    rows = await fetch(
        database_url,
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()",
    )
    return {row["application_name"] for row in rows}


@pytest.fixture
def private_database(postgres_server_url: str) -> Iterator[str]:
    """A database no other gunicorn of this session connects to."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.mark.parametrize("preload", ["false", "true"])
async def test_each_worker_owns_its_pool(private_database: str, preload: str) -> None:
    database_url = private_database
    with run_gunicorn(database_url, workers=4, env={**TEST_ENV, "PRELOAD_APP": preload}) as server:
        pids = server.worker_pids()
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            accounts = await asyncio.gather(*(signup(http) for _ in range(8)))

            async def hammer() -> list[int]:
                statuses = []
                for account in accounts:
                    response = await http.get(
                        "/items", headers={**account.auth, "Connection": "close"}
                    )
                    statuses.append(response.status_code)
                return statuses

            results = await asyncio.gather(*(hammer() for _ in range(10)))
        names = await _application_names(database_url)
    assert {status for statuses in results for status in statuses} == {200}
    # Every connection is named after the process that opened it: the workers' own pools.
    worker_connections = {name for name in names if name.startswith("service-worker-")}
    assert worker_connections
    assert worker_connections <= {f"service-worker-{pid}" for pid in pids}


def _start_expecting_refusal(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GUNICORN, "-c", "gunicorn.conf.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY: Input should be greater than or equal to 1"),
        ({"TIMEOUT": "soon"}, "TIMEOUT: Input should be a valid integer"),
        ({"HEADER_TIMEOUT": "0"}, "HEADER_TIMEOUT: Input should be greater than or equal to 1"),
        ({"LIMIT_CONCURRENCY": "many"}, "LIMIT_CONCURRENCY: Input should be a valid integer"),
        ({"DB_POOL_SIZE": "lots"}, "DB_POOL_SIZE"),
        ({"ENVIRONMENT": "production"}, "JWT_SECRET_KEY"),
    ],
)
def test_impossible_configuration_is_refused_clearly(
    database_url: str, overrides: dict[str, str], message: str
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        env = gunicorn_env(database_url, 1, Path(scratch), **(TEST_ENV | overrides))
        env.pop("JWT_SECRET_KEY", None)
        result = _start_expecting_refusal(env)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr + result.stdout
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_connection_budget_over_max_connections_is_refused() -> None:
    with postgres_scratch() as scratch:
        _refused_then_fits(
            EmbeddedPostgres(scratch / "small", max_connections=20, log=lambda _: None)
        )


def _refused_then_fits(server: EmbeddedPostgres) -> None:
    server_url = server.start()
    try:
        with fresh_database(server_url) as url, tempfile.TemporaryDirectory() as scratch:
            env = gunicorn_env(
                url, 1, Path(scratch), **TEST_ENV, WEB_CONCURRENCY="4", DB_POOL_SIZE="10"
            )
            started = time.monotonic()
            result = _start_expecting_refusal(env)
            elapsed = time.monotonic() - started
            output = result.stderr + result.stdout
            assert result.returncode == 2
            assert elapsed < 15
            assert "40 connections needed but the database allows" in output
            assert "Booting worker" not in output  # refused before forking: no crash loop
            # The same database with a pool that fits starts fine.
            with run_gunicorn(url, workers=2, env={**TEST_ENV, "DB_POOL_SIZE": "3"}) as fits:
                assert httpx.get(fits.url + "/readyz", timeout=5).status_code == 200
                assert "connection budget: 2 workers x 3 connections" in fits.log()
    finally:
        server.destroy()
