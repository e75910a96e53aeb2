"""Login throttling: per (user, address), per user and per address, counted in PostgreSQL.
In-process, the client address is the transport's; under gunicorn, X-Forwarded-For from
loopback (trusted by default)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.core.settings import Settings
from tests.conftest import make_settings
from tests.support.api import WRONG_PASSWORD, fresh_address, room_in_window, signup, unique_name
from tooling.database import fetch
from tooling.metrics import metric_sum

PAIR_LIMIT = 10  # the defaults: 10 per (user, address), 100 per user, 100 per address
USER_LIMIT = 100
ADDRESS_LIMIT = 100


class Attacker:
    """One client that can send logins from any address it likes."""

    def __init__(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        self.client = client
        self.app = app
        self.in_process = client.base_url.host == "test"

    async def login(self, username: str, password: str, address: str) -> httpx.Response:
        data = {"username": username, "password": password}
        if not self.in_process:
            headers = {"X-Forwarded-For": address}
            return await self.client.post("/auth/token", data=data, headers=headers)
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/auth/token", data=data)

    async def statuses(self, username: str, password: str, address: str, times: int) -> list[int]:
        return [(await self.login(username, password, address)).status_code for _ in range(times)]

    async def metric(self, name: str, **labels: str) -> float:
        return metric_sum((await self.client.get("/metrics")).text, name, **labels)


@pytest.fixture
def attacker(client: httpx.AsyncClient, app: FastAPI) -> Attacker:
    return Attacker(client, app)


async def test_the_pair_limit_refuses_before_bcrypt_and_spares_other_addresses(
    attacker: Attacker, client: httpx.AsyncClient
) -> None:
    await room_in_window()
    account = await signup(client)
    address = fresh_address()
    assert (
        await attacker.statuses(account.name, WRONG_PASSWORD, address, PAIR_LIMIT)
        == [401] * PAIR_LIMIT
    )
    verifies = await attacker.metric("password_hash_duration_seconds_count", operation="verify")
    throttled = await attacker.metric("auth_logins_throttled_total", limit="user_address")
    refused = await attacker.login(account.name, WRONG_PASSWORD, address)
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Too many failed login attempts, retry later"}
    assert 1 <= int(refused.headers["retry-after"]) <= 900
    # Even the right password is refused now, and no bcrypt ran for either attempt.
    right = await attacker.login(account.name, account.password, address)
    assert right.status_code == 429
    assert await attacker.metric(
        "password_hash_duration_seconds_count", operation="verify"
    ) == pytest.approx(verifies)
    assert await attacker.metric(
        "auth_logins_throttled_total", limit="user_address"
    ) == pytest.approx(throttled + 2)
    # The attacking address cannot lock the real user out: from elsewhere it logs in.
    assert (
        await attacker.login(account.name, account.password, fresh_address())
    ).status_code == 200


async def test_unknown_user_names_are_counted_the_same(
    attacker: Attacker, client: httpx.AsyncClient
) -> None:
    """429 versus 401 reveals nothing: a name that exists and one that does not answer the
    same sequence, with the same bodies."""
    await room_in_window()
    account = await signup(client)
    address = fresh_address()
    answers = {}
    for name in (account.name, unique_name()):
        sequence = [await attacker.login(name, WRONG_PASSWORD, address) for _ in range(12)]
        answers[name] = [(r.status_code, r.json()["detail"]) for r in sequence]
    known, unknown = answers.values()
    assert known == unknown
    assert [status for status, _ in known] == [401] * PAIR_LIMIT + [429] * 2


async def test_a_success_is_not_counted_as_a_failure(
    attacker: Attacker, client: httpx.AsyncClient
) -> None:
    await room_in_window()
    account = await signup(client)
    address = fresh_address()
    wrong = PAIR_LIMIT - 1
    assert await attacker.statuses(account.name, WRONG_PASSWORD, address, wrong) == [401] * wrong
    assert (await attacker.login(account.name, account.password, address)).status_code == 200
    # Still one failure left in this window, then the limit.
    assert await attacker.statuses(account.name, WRONG_PASSWORD, address, 2) == [401, 429]


async def test_one_address_trying_many_names_hits_the_address_limit(
    database_url: str,
) -> None:
    """In-process with the default per-address limit (the shared fixtures raise it, since
    all their clients share loopback); tests/e2e/test_throttle_processes.py does the same
    across processes."""
    await room_in_window()
    default = Settings.model_fields["login_failures_per_address"].default
    application = create_app(make_settings(database_url, login_failures_per_address=default))
    async with application.router.lifespan_context(application):
        assert application.state.throttle_limits.per_address == ADDRESS_LIMIT
        attacker = Attacker(httpx.AsyncClient(base_url="http://test"), application)
        address = fresh_address()
        names = [unique_name("spray") for _ in range(ADDRESS_LIMIT)]
        statuses = [(await attacker.login(n, WRONG_PASSWORD, address)).status_code for n in names]
        assert statuses == [401] * ADDRESS_LIMIT
        refused = await attacker.login(unique_name("spray"), WRONG_PASSWORD, address)
        assert refused.status_code == 429
        other = await attacker.login(unique_name("spray"), WRONG_PASSWORD, fresh_address())
        assert other.status_code == 401  # another address is not affected
    rows = await fetch(
        database_url,
        "SELECT failures FROM login_failures WHERE scope = 'address' AND key = $1",
        address,
    )
    assert [row["failures"] for row in rows] == [ADDRESS_LIMIT]  # the refused one not counted


async def test_many_addresses_against_one_user_hit_the_user_limit(
    attacker: Attacker, client: httpx.AsyncClient
) -> None:
    """A distributed attack stays bounded: USER_LIMIT guesses per window in all. (Then the
    user waits for the window too: the documented price of bounding it.)"""
    await room_in_window()
    account = await signup(client)
    for _ in range(USER_LIMIT // PAIR_LIMIT):
        address = fresh_address()
        assert (
            await attacker.statuses(account.name, WRONG_PASSWORD, address, PAIR_LIMIT)
            == [401] * PAIR_LIMIT
        )
    refused = await attacker.login(account.name, WRONG_PASSWORD, fresh_address())
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Too many failed login attempts, retry later"}
