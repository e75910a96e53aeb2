"""Login throttling holds across processes: 2 gunicorn instances x 4 workers on one
database, concurrent attempts, and exactly the limit is evaluated, not 4x or 8x it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import WRONG_PASSWORD, attempt, fresh_address, room_in_window, unique_name
from tests.support.processes import TEST_ENV
from tooling.database import fetch
from tooling.gunicorn import Gunicorn, run_gunicorn
from tooling.metrics import metric_sum

pytestmark = pytest.mark.gunicorn

PAIR_LIMIT = 10
ADDRESS_LIMIT = 100
RESEND_ROUNDS = 20


@pytest.fixture(scope="module")
def two_instances(database_url: str) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    env = {"LOGIN_FAILURES_PER_ADDRESS": str(ADDRESS_LIMIT)}  # the default, not the suite's
    with (
        run_gunicorn(database_url, workers=4, env=TEST_ENV | env) as first,
        run_gunicorn(database_url, workers=4, env=TEST_ENV | env) as second,
    ):
        yield first, second


async def _flood(
    instances: tuple[Gunicorn, ...], logins: list[tuple[str, str]]
) -> tuple[Counter[int], set[str], Counter[str]]:
    """All `logins` (name, address) at once, alternating instances, each on its own
    connection so every worker of each instance takes some. A burst this size overflows
    each worker's hashing queue: those get 503 before anything is counted and are sent
    again (as a client honouring Retry-After would), until every attempt has an answer."""
    shed: Counter[str] = Counter()
    final: dict[int, httpx.Response] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=30))
            for server in instances
        ]
        pending = list(range(len(logins)))
        for _ in range(RESEND_ROUNDS):
            answers = await asyncio.gather(
                *(
                    attempt(clients[n % len(clients)], logins[n][0], WRONG_PASSWORD, logins[n][1])
                    for n in pending
                )
            )
            for n, answer in zip(pending, answers, strict=True):
                if answer.status_code == 503:
                    shed[answer.json().get("reason", "?")] += 1
                else:
                    final[n] = answer
            pending = [n for n in pending if n not in final]
            if not pending:
                break
            await asyncio.sleep(0.5)
        assert not pending, f"{len(pending)} attempts still shed after {RESEND_ROUNDS} rounds"
    workers = {f"{a.url.port}:{a.headers.get('x-worker-id')}" for a in final.values()}
    return Counter(a.status_code for a in final.values()), workers, shed


async def _throttled_total(instances: tuple[Gunicorn, ...]) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        scraped = [(await http.get(server.url + "/metrics")).text for server in instances]
    return sum(metric_sum(text, "auth_logins_throttled_total") for text in scraped)


async def test_concurrent_guesses_at_one_pair_evaluate_exactly_the_limit(
    two_instances: tuple[Gunicorn, Gunicorn], database_url: str
) -> None:
    await room_in_window()
    name, address = unique_name("pair"), fresh_address()
    throttled_before = await _throttled_total(two_instances)
    statuses, workers, shed = await _flood(two_instances, [(name, address)] * 80)
    assert statuses == Counter({401: PAIR_LIMIT, 429: 80 - PAIR_LIMIT}), (statuses, shed)
    assert set(shed) <= {"hash_capacity"}, shed
    assert len(workers) >= 4, f"the attempts reached only {workers}"
    rows = await fetch(
        database_url,
        "SELECT scope, failures FROM login_failures WHERE key IN ($1, $2) ORDER BY scope",
        name,
        f"{address} {name}",
    )
    assert [(r["scope"], r["failures"]) for r in rows] == [
        ("user", PAIR_LIMIT),
        ("user_address", PAIR_LIMIT),
    ]
    assert await _throttled_total(two_instances) - throttled_before == 80 - PAIR_LIMIT


async def test_concurrent_spraying_from_one_address_evaluates_exactly_the_limit(
    two_instances: tuple[Gunicorn, Gunicorn],
) -> None:
    await room_in_window()
    address = fresh_address()
    logins = [(unique_name("spray"), address) for _ in range(ADDRESS_LIMIT + 50)]
    statuses, _, shed = await _flood(two_instances, logins)
    assert statuses == Counter({401: ADDRESS_LIMIT, 429: 50}), (statuses, shed)
    assert set(shed) <= {"hash_capacity"}, shed


async def test_forwarded_for_counts_only_from_a_trusted_proxy(database_url: str) -> None:
    """With loopback not in FORWARDED_ALLOW_IPS, X-Forwarded-For is ignored: attempts that
    claim different addresses are all counted against the real peer (127.0.0.1)."""
    await room_in_window()
    env = {"FORWARDED_ALLOW_IPS": "192.0.2.1", "LOGIN_FAILURES_PER_ADDRESS": str(ADDRESS_LIMIT)}
    name = unique_name("xff")
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as untrusting:
        async with httpx.AsyncClient(base_url=untrusting.url, timeout=10) as http:
            claimed = [
                (await attempt(http, name, WRONG_PASSWORD, fresh_address())).status_code
                for _ in range(PAIR_LIMIT + 1)
            ]
    assert claimed == [401] * PAIR_LIMIT + [429]
    rows = await fetch(
        database_url,
        "SELECT key FROM login_failures WHERE scope = 'user_address' AND key LIKE $1",
        f"% {name}",
    )
    assert [row["key"] for row in rows] == [f"127.0.0.1 {name}"]
