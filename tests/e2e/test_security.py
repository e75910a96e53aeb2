"""Security properties of the deployed service, checked on a real gunicorn."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from tests.support.api import signup, unique_name
from tests.support.processes import TEST_ENV
from tooling.gunicorn import Gunicorn, run_gunicorn

pytestmark = pytest.mark.gunicorn

PRODUCTION = {"ENVIRONMENT": "production", "JWT_SECRET_KEY": "p" * 48}


async def test_production_hides_docs_and_never_leaks_tracebacks(database_url: str) -> None:
    env = {**PRODUCTION, "APP_MODULE": "tests.support.faults:faulty_app()"}
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            for path in ["/docs", "/redoc", "/openapi.json"]:
                assert (await http.get(path)).status_code == 404, path
            crash = await http.get("/_test/crash")
            account = await signup(http)
            token = await http.post(
                "/auth/token", data={"username": account.name, "password": account.password}
            )
        log = server.log()
    assert crash.status_code == 500
    assert crash.json() == {"detail": "Internal server error"}
    assert "secret internal detail" not in crash.text
    assert "Traceback" not in crash.text
    assert "secret internal detail" in log  # the operator still sees it
    assert token.headers["cache-control"] == "no-store"


async def test_every_response_carries_the_security_headers(gunicorn_server: Gunicorn) -> None:
    async with httpx.AsyncClient(base_url=gunicorn_server.url, timeout=5) as http:
        account = await signup(http)
        responses = [
            await http.get("/livez"),
            await http.get("/users"),
            await http.get("/users/not-a-uuid"),
            await http.get("/items"),
            await http.post("/auth/token", data={"username": "x", "password": "y"}),
            await http.post("/auth/refresh", data={"refresh_token": account.refresh_token}),
            await http.get("/nope"),
        ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["content-type"].startswith("application/json"), response.url
    assert responses[4].status_code == 401
    assert responses[5].headers["cache-control"] == "no-store"


async def test_login_timing_does_not_reveal_whether_a_user_exists(database_url: str) -> None:
    """Cost-10 bcrypt (~60 ms): without the dummy hash an unknown user would answer in
    ~2 ms. Compare medians of interleaved attempts; noise on a shared machine stays well
    inside the bounds, a missing dummy hash falls far outside them."""
    with run_gunicorn(database_url, workers=2, env={**TEST_ENV, "BCRYPT_ROUNDS": "10"}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            account = await signup(http)
            samples: dict[str, list[float]] = {"wrong_password": [], "unknown_user": []}
            for round_no in range(12):
                # Each round from its own address: the per-(user, address) login limit
                # (10) would otherwise answer 429 from the eleventh wrong password on.
                headers = {"X-Forwarded-For": f"192.0.2.{round_no + 1}"}
                for kind, username in [
                    ("wrong_password", account.name),
                    ("unknown_user", unique_name()),
                ]:
                    started = time.perf_counter()
                    response = await http.post(
                        "/auth/token",
                        data={"username": username, "password": "Wrong-pass-1"},
                        headers=headers,
                    )
                    samples[kind].append(time.perf_counter() - started)
                    assert response.status_code == 401
            await asyncio.sleep(0)
    ratio = statistics.median(samples["unknown_user"]) / statistics.median(
        samples["wrong_password"]
    )
    assert 0.6 < ratio < 1.6, ratio
