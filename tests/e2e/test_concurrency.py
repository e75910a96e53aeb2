"""Concurrency holds across workers: real gunicorn, 4 workers, real PostgreSQL, loopback."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.api import PASSWORD, Account, add_item, signup, unique_name
from tests.support.processes import TEST_ENV, one_response_from_each_worker
from tooling.database import fetch
from tooling.gunicorn import Gunicorn, run_gunicorn

pytestmark = pytest.mark.gunicorn

CLIENT_TIMEOUT = 2.0  # seconds; any request slower than this counts as a failure


class Poller:
    """A client reading GET /users back to back, recording every failure and worker id."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.stop = asyncio.Event()
        self.failures: list[str] = []
        self.workers: Counter[str] = Counter()
        self.slowest = 0.0

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=CLIENT_TIMEOUT) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    response = await http.get("/users", params={"limit": 50})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.slowest = max(self.slowest, time.perf_counter() - started)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                self.workers[response.headers["x-worker-id"]] += 1


async def test_create_while_polling(gunicorn_server: Gunicorn, database_url: str) -> None:
    prefix = unique_name("cwp")[:12]
    poller = Poller(gunicorn_server.url)
    polling = asyncio.create_task(poller.run())
    served_by: Counter[str] = Counter()

    async def creator(client_no: int) -> list[tuple[str, list[str]]]:
        made = []
        async with httpx.AsyncClient(base_url=gunicorn_server.url, timeout=CLIENT_TIMEOUT) as http:
            for user_no in range(10):
                account = await signup(http, name=f"{prefix}-{client_no}-{user_no}")
                item_ids = []
                for item_no in range(10):
                    item = await add_item(http, account, f"item-{item_no}")
                    item_ids.append(item["pubid"])
                back = await http.get(f"/users/{account.pubid}", params={"incl_items": True})
                assert back.status_code == 200
                assert [i["pubid"] for i in back.json()["items"]] == item_ids
                served_by[back.headers["x-worker-id"]] += 1
                made.append((account.pubid, item_ids))
        return made

    created = await asyncio.gather(*(creator(n) for n in range(4)))
    poller.stop.set()
    await polling

    assert poller.failures == []
    assert poller.slowest < CLIENT_TIMEOUT
    users = {pubid: items for batch in created for pubid, items in batch}
    assert len(users) == 40
    user_rows = await fetch(
        database_url, "SELECT pubid::text AS pubid FROM users WHERE name LIKE $1", f"{prefix}-%"
    )
    assert Counter(row["pubid"] for row in user_rows) == Counter(users.keys())  # exactly once
    item_rows = await fetch(
        database_url,
        "SELECT i.pubid::text AS pubid FROM items i JOIN users u ON u.id = i.user_id "
        "WHERE u.name LIKE $1",
        f"{prefix}-%",
    )
    expected_items = [pubid for items in users.values() for pubid in items]
    assert Counter(row["pubid"] for row in item_rows) == Counter(expected_items)
    assert len(expected_items) == 400


GROUPS = 10
ROWS_PER_GROUP = 10
CROSSING_ROUNDS = 5


def _retries(metrics_text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith('db_errors_total{kind="deadlock_retry"}')
    )


async def test_contention_on_one_row_and_crossing_rows(gunicorn_server: Gunicorn) -> None:
    """20 concurrent updates of one user; then 10 groups of rows, each group updated by two
    batches in opposite orders at once: PostgreSQL detects real deadlocks, the service
    retries the victims, and every request succeeds (rounds repeat until one deadlock)."""
    poller = Poller(gunicorn_server.url)
    polling = asyncio.create_task(poller.run())
    async with httpx.AsyncClient(base_url=gunicorn_server.url, timeout=15) as http:
        owner = await signup(http)
        names = [f"writer-{n}" for n in range(20)]
        updates = await asyncio.gather(
            *(
                http.put(f"/users/{owner.pubid}", json={"fullname": n}, headers=owner.auth)
                for n in names
            )
        )
        final_user = (await http.get(f"/users/{owner.pubid}")).json()

        rows_owner = owner.auth
        row_ids = [
            (await add_item(http, owner, f"row{i}"))["pubid"]
            for i in range(GROUPS * ROWS_PER_GROUP)
        ]
        groups = [row_ids[n * ROWS_PER_GROUP : (n + 1) * ROWS_PER_GROUP] for n in range(GROUPS)]
        retries_before = _retries((await http.get("/metrics")).text)

        def batch(group: list[str], stamp: datetime, reverse: bool) -> dict[str, object]:
            ordered = group[::-1] if reverse else group
            return {"updates": [{"pubid": p, "added": stamp.isoformat()} for p in ordered]}

        # Two batches deadlock only when they overlap in time; on a busy machine one round
        # may run them one after another. Repeat (new timestamps each round) until
        # PostgreSQL has reported a deadlock, at most CROSSING_ROUNDS times.
        crossing: list[httpx.Response] = []
        for round_no in range(CROSSING_ROUNDS):
            base = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=100 * round_no)
            writes = {
                (n, reverse): base + timedelta(days=n, minutes=reverse)
                for n in range(GROUPS)
                for reverse in (False, True)
            }
            crossing += await asyncio.gather(
                *(
                    http.patch("/items", json=batch(groups[n], stamp, reverse), headers=rows_owner)
                    for (n, reverse), stamp in writes.items()
                )
            )
            retries = _retries((await http.get("/metrics")).text) - retries_before
            if retries >= 1:
                break
        final_items = {
            item["pubid"]: item["added"]
            for item in (
                await http.get("/items", params={"limit": 500}, headers=rows_owner)
            ).json()["items"]
        }
    poller.stop.set()
    await polling

    assert [r.status_code for r in updates] == [200] * 20, [r.text for r in updates]
    assert final_user["fullname"] in names
    assert [r.status_code for r in crossing] == [200] * len(crossing), [r.text for r in crossing]
    assert poller.failures == []
    for n, group in enumerate(groups):
        # Each batch wrote one timestamp to its whole group: a group ends as one whole batch
        # of the last round.
        assert len({final_items[row] for row in group}) == 1
        assert datetime.fromisoformat(final_items[group[0]]) in {
            writes[(n, False)],
            writes[(n, True)],
        }
    print(f"deadlocks detected and retried: {retries:.0f} (rounds: {round_no + 1})")
    assert retries >= 1, "the crossing batches were meant to provoke real deadlocks"


async def test_every_worker_serves(gunicorn_server: Gunicorn) -> None:
    answered = await one_response_from_each_worker(
        gunicorn_server, lambda http: http.get("/livez", headers={"Connection": "close"})
    )
    assert sorted(answered) == gunicorn_server.worker_pids()
    assert {response.status_code for response in answered.values()} == {200}


async def test_a_token_from_one_worker_is_accepted_by_every_worker(
    gunicorn_server: Gunicorn,
) -> None:
    async with httpx.AsyncClient(base_url=gunicorn_server.url, timeout=CLIENT_TIMEOUT) as http:
        account: Account = await signup(http)
    answered = await one_response_from_each_worker(
        gunicorn_server,
        lambda http: http.get("/items", headers={**account.auth, "Connection": "close"}),
    )
    assert len(answered) == 4
    for worker, response in answered.items():
        assert response.status_code == 200, (worker, response.text)


async def test_signups_do_not_stall_reads(database_url: str) -> None:
    """Eight cost-12 bcrypt sign-ups at once: on the event loop each would freeze its worker
    for ~0.25 s per hash; in a thread, reads on the same workers keep flowing."""
    # Admission control is not under test here (tests/e2e/test_hash_admission.py): let
    # every hash run, however slow this machine is today, so all eight sign-ups are 201.
    env = {"BCRYPT_ROUNDS": "12", "HASH_CONCURRENCY": "8", "HASH_QUEUE_TIMEOUT_SECONDS": "30"}
    with run_gunicorn(database_url, workers=4, env=TEST_ENV | env) as server:
        poller = Poller(server.url)
        polling = asyncio.create_task(poller.run())
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            signups = await asyncio.gather(
                *(
                    http.post(
                        "/users",
                        json={"name": unique_name(), "password": PASSWORD},
                        headers={"Connection": "close"},
                    )
                    for _ in range(8)
                )
            )
            await asyncio.sleep(random.uniform(0.1, 0.2))
        poller.stop.set()
        await polling
    assert [r.status_code for r in signups] == [201] * 8
    assert poller.failures == []
    assert poller.slowest < CLIENT_TIMEOUT
    assert sum(poller.workers.values()) > 20
