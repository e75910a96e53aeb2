"""Bounded API traffic over one or more service instances, with a ledger of what was sent.

Every request goes to the next instance in turn (as a round-robin proxy would send it) and
is recorded by (instance, method, route template, status), so a test can reconcile the
ledger with each instance's /metrics; every acknowledged write goes to the same ledger of
acknowledged writes the load-test proof keeps (tooling.ledger), to check against the rows
in PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx

from tooling.ledger import HOT_WRITE, ITEM_CREATED, ITEM_DELETED, USER_CREATED
from tooling.ledger import Ledger as WriteLedger

PASSWORD = "correct-horse-42"
# Generous: these tests check that nothing is lost or duplicated; on a busy machine a request
# may queue for seconds behind others (latency belongs to the benchmarks).
REQUEST_TIMEOUT = 60.0
STAMP = datetime(2031, 5, 17, 12, 0, tzinfo=UTC)


@dataclass
class Ledger:
    sent: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    workers: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    writes: WriteLedger = field(default_factory=WriteLedger)  # acknowledged writes
    slowest: float = 0.0  # seconds, for the report of a run

    def by_route(self, base: str) -> Counter[tuple[str, str, str]]:
        """What `base` was sent, keyed like http_requests_total's labels."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for (where, method, route, status), count in self.sent.items():
            if where == base:
                counts[(method, route, str(status))] += count
        return counts

    def total(self, base: str) -> int:
        return sum(self.by_route(base).values())


class Client:
    """One client's connections, one keep-alive connection pool per instance."""

    def __init__(self, bases: Sequence[str], ledger: Ledger, *, start: int = 0) -> None:
        self.bases = list(bases)
        self.ledger = ledger
        self._turn = itertools.cycle(self.bases[start % len(bases) :] + self.bases[:start])
        self._http: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> Client:
        for base in self.bases:
            self._http[base] = httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for http in self._http.values():
            await http.aclose()

    async def call(
        self, method: str, route: str, path: str, *, expect: int, **kwargs: Any
    ) -> httpx.Response | None:
        base = next(self._turn)
        started = time.monotonic()
        try:
            response = await self._http[base].request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.ledger.errors.append(f"{method} {path} on {base}: {type(exc).__name__}: {exc}")
            return None
        finally:
            self.ledger.slowest = max(self.ledger.slowest, time.monotonic() - started)
        self.ledger.sent[(base, method, route, response.status_code)] += 1
        self.ledger.workers[base].add(response.headers.get("x-worker-id", "?"))
        if response.status_code != expect:
            self.ledger.errors.append(
                f"{method} {path} on {base}: {response.status_code} (expected {expect}): "
                f"{response.text[:300]}"
            )
            return None
        return response

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.ledger.errors.append(what)


@dataclass(frozen=True)
class Login:
    name: str
    pubid: str
    headers: dict[str, str]


async def sign_up_and_log_in(client: Client, name: str) -> Login | None:
    created = await client.call(
        "POST", "/users", "/users", expect=201, json={"name": name, "password": PASSWORD}
    )
    await client.call(
        "POST",
        "/auth/token",
        "/auth/token",
        expect=401,
        data={"username": name, "password": "wrong-password-1"},
    )
    tokens = await client.call(
        "POST",
        "/auth/token",
        "/auth/token",
        expect=200,
        data={"username": name, "password": PASSWORD},
    )
    if created is None or tokens is None:
        return None
    pubid = created.json()["pubid"]
    client.ledger.writes.record(USER_CREATED, pubid=pubid)
    token = tokens.json()["access_token"]
    return Login(name, pubid, {"Authorization": f"Bearer {token}"})


async def item_journey(client: Client, name: str, *, items: int = 4) -> None:
    """Sign up, log in (and fail once), then create, list, read, update and delete items,
    each request on the next instance: every step must see the previous one's commit."""
    login = await sign_up_and_log_in(client, name)
    if login is None:
        return
    writes = client.ledger.writes
    owned: list[str] = []
    for number in range(items):
        made = await client.call(
            "POST",
            "/items",
            "/items",
            expect=201,
            headers=login.headers,
            json={"name": f"item-{number}", "user_pubid": login.pubid},
        )
        if made is not None:
            owned.append(made.json()["pubid"])
            writes.record(ITEM_CREATED, pubid=owned[-1], owner=login.pubid)
    listed = await client.call(
        "GET", "/items", "/items", expect=200, headers=login.headers, params={"limit": 50}
    )
    if listed is not None:
        seen = {item["pubid"] for item in listed.json()["items"]}
        client.check(seen == set(owned), f"{name}: listed {seen}, created {set(owned)}")
    for pubid in owned:
        await client.call(
            "GET", "/items/{pubid}", f"/items/{pubid}", expect=200, headers=login.headers
        )
    first, *_, last = owned
    stamp = (STAMP + timedelta(minutes=len(name))).isoformat()
    updated = await client.call(
        "PUT",
        "/items/{pubid}",
        f"/items/{first}",
        expect=200,
        headers=login.headers,
        json={"added": stamp},
    )
    if updated is not None:
        value = updated.json()["added"]
        writes.record(HOT_WRITE, table="items", pubid=first, value=value)
    if await client.call(
        "DELETE", "/items/{pubid}", f"/items/{last}", expect=204, headers=login.headers
    ):
        owned.remove(last)
        writes.record(ITEM_DELETED, pubid=last, owner=login.pubid)
    await client.call("GET", "/items/{pubid}", f"/items/{last}", expect=404, headers=login.headers)
    back = await client.call(
        "GET",
        "/users/{pubid}",
        f"/users/{login.pubid}",
        expect=200,
        params={"incl_items": "true"},
    )
    if back is not None:
        seen = {item["pubid"] for item in back.json()["items"]}
        client.check(seen == set(owned), f"{name}: user shows {seen}, expected {set(owned)}")


@dataclass(frozen=True)
class Crossing:
    """Groups of one owner's items, each group written by two batches in opposite orders."""

    owner: str
    groups: list[list[str]]
    stamps: dict[tuple[int, bool], str]


async def crossing_batches(
    bases: Sequence[str], ledger: Ledger, name: str, *, groups: int = 6, rows: int = 8
) -> Crossing | None:
    """Concurrent bulk updates that name the same rows in opposite orders: PostgreSQL
    detects the deadlocks, the service rolls the victim back and retries it."""
    async with Client(bases, ledger) as client:
        login = await sign_up_and_log_in(client, name)
        if login is None:
            return None
        made = await asyncio.gather(
            *(
                client.call(
                    "POST",
                    "/items",
                    "/items",
                    expect=201,
                    headers=login.headers,
                    json={"name": f"row-{n}", "user_pubid": login.pubid},
                )
                for n in range(groups * rows)
            )
        )
    pubids = [response.json()["pubid"] for response in made if response is not None]
    for pubid in pubids:
        ledger.writes.record(ITEM_CREATED, pubid=pubid, owner=login.pubid)
    grouped = [pubids[n * rows : (n + 1) * rows] for n in range(groups)]
    stamps = {
        (n, reverse): (STAMP + timedelta(days=n, minutes=reverse)).isoformat()
        for n in range(groups)
        for reverse in (False, True)
    }

    async def batch(n: int, reverse: bool) -> None:
        ordered = grouped[n][::-1] if reverse else grouped[n]
        body = {"updates": [{"pubid": p, "added": stamps[(n, reverse)]} for p in ordered]}
        async with Client(bases, ledger, start=n + reverse) as one:
            await one.call(
                "PATCH", "/items", "/items", expect=200, headers=login.headers, json=body
            )

    await asyncio.gather(*(batch(n, reverse) for n in range(groups) for reverse in (False, True)))
    return Crossing(name, grouped, stamps)


def unique_prefix(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}"
