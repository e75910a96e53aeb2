"""Bounded API traffic over one or more service instances.

Every request goes to the next instance in turn (as a round-robin proxy would send it) and
is counted by (instance, method, route template, status), so a test can reconcile the counts
with each instance's /metrics; every acknowledged write goes to the ledger the load-test
proof keeps (tooling.ledger), to check against the rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.api import PASSWORD, WRONG_PASSWORD, Account
from tooling.ledger import HOT_WRITE, ITEM_CREATED, ITEM_DELETED, USER_CREATED, Ledger

# Generous: these tests check that nothing is lost or duplicated; on a busy machine a request
# may queue for seconds behind others (latency belongs to the benchmarks).
REQUEST_TIMEOUT = 60.0
STAMP = datetime(2031, 5, 17, 12, 0, tzinfo=UTC)


@dataclass
class Traffic:
    """What was sent and what went wrong; `writes`: the acknowledged writes."""

    sent: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    writes: Ledger = field(default_factory=Ledger)
    slowest: float = 0.0  # seconds, for the report of a run

    def by_route(self, base: str) -> Counter[tuple[str, str, str]]:
        """What `base` was sent, keyed like http_requests_total's labels."""
        sent = self.sent.items()
        return Counter({(m, r, str(s)): n for (where, m, r, s), n in sent if where == base})

    def total(self, base: str) -> int:
        return sum(self.by_route(base).values())


class Client:
    """One client's keep-alive connections (httpx keeps one per instance)."""

    def __init__(self, bases: Sequence[str], traffic: Traffic, *, start: int = 0) -> None:
        self.traffic = traffic
        self._turn = itertools.cycle([*bases[start % len(bases) :], *bases[:start]])
        self._http = httpx.AsyncClient(timeout=REQUEST_TIMEOUT)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(
        self, method: str, route: str, *, expect: int, pubid: str = "", **kwargs: Any
    ) -> httpx.Response | None:
        """The response if its status is `expect`; `route` is the template /metrics names,
        its `{pubid}` filled in."""
        base, path = next(self._turn), route.format(pubid=pubid)
        started = time.monotonic()
        try:
            response = await self._http.request(method, base + path, **kwargs)
        except httpx.HTTPError as exc:
            self.check(False, f"{method} {path} on {base}: {type(exc).__name__}: {exc}")
            return None
        finally:
            self.traffic.slowest = max(self.traffic.slowest, time.monotonic() - started)
        self.traffic.sent[(base, method, route, response.status_code)] += 1
        if response.status_code != expect:
            what = f"{response.status_code} (expected {expect}): {response.text[:300]}"
            self.check(False, f"{method} {path} on {base}: {what}")
            return None
        return response

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.traffic.errors.append(what)


async def sign_up_and_log_in(client: Client, name: str) -> Account | None:
    created = await client.call(
        "POST", "/users", expect=201, json={"name": name, "password": PASSWORD}
    )
    wrong = {"username": name, "password": WRONG_PASSWORD}
    await client.call("POST", "/auth/token", expect=401, data=wrong)
    right = {"username": name, "password": PASSWORD}
    tokens = await client.call("POST", "/auth/token", expect=200, data=right)
    if created is None or tokens is None:
        return None
    pubid = created.json()["pubid"]
    client.traffic.writes.record(USER_CREATED, pubid=pubid)
    body = tokens.json()
    return Account(name, PASSWORD, pubid, body["access_token"], body["refresh_token"])


async def add_item(client: Client, login: Account, name: str) -> str | None:
    body = {"name": name, "user_pubid": login.pubid}
    made = await client.call("POST", "/items", expect=201, headers=login.auth, json=body)
    if made is None:
        return None
    pubid: str = made.json()["pubid"]
    client.traffic.writes.record(ITEM_CREATED, pubid=pubid, owner=login.pubid)
    return pubid


async def item_journey(client: Client, name: str, *, items: int = 4) -> None:
    """Sign up, log in (and fail once), then create, list, read, update and delete items,
    each request on the next instance: every step must see the previous one's commit."""
    login = await sign_up_and_log_in(client, name)
    if login is None:
        return
    auth = login.auth
    made = [await add_item(client, login, f"item-{n}") for n in range(items)]
    owned = [pubid for pubid in made if pubid is not None]
    listed = await client.call("GET", "/items", expect=200, headers=auth, params={"limit": 50})
    if listed is not None:
        seen = {item["pubid"] for item in listed.json()["items"]}
        client.check(seen == set(owned), f"{name}: listed {seen}, created {set(owned)}")
    for pubid in owned:
        await client.call("GET", "/items/{pubid}", expect=200, headers=auth, pubid=pubid)
    first, *_, last = owned
    stamp = (STAMP + timedelta(minutes=len(name))).isoformat()
    updated = await client.call(
        "PUT", "/items/{pubid}", expect=200, headers=auth, pubid=first, json={"added": stamp}
    )
    if updated is not None:
        value = updated.json()["added"]
        client.traffic.writes.record(HOT_WRITE, table="items", pubid=first, value=value)
    if await client.call("DELETE", "/items/{pubid}", expect=204, headers=auth, pubid=last):
        owned.remove(last)
        client.traffic.writes.record(ITEM_DELETED, pubid=last, owner=login.pubid)
    await client.call("GET", "/items/{pubid}", expect=404, headers=auth, pubid=last)
    back = await client.call(
        "GET", "/users/{pubid}", expect=200, pubid=login.pubid, params={"incl_items": "true"}
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
    bases: Sequence[str], traffic: Traffic, name: str, *, groups: int = 6, rows: int = 8
) -> Crossing | None:
    """Concurrent bulk updates that name the same rows in opposite orders: PostgreSQL
    detects the deadlocks, the service rolls the victim back and retries it."""
    async with Client(bases, traffic) as client:
        login = await sign_up_and_log_in(client, name)
        if login is None:
            return None
        made = [add_item(client, login, f"row-{n}") for n in range(groups * rows)]
        pubids = [pubid for pubid in await asyncio.gather(*made) if pubid is not None]
    grouped = [pubids[n * rows : (n + 1) * rows] for n in range(groups)]
    stamps = {
        (n, reverse): (STAMP + timedelta(days=n, minutes=reverse)).isoformat()
        for n in range(groups)
        for reverse in (False, True)
    }

    async def batch(n: int, reverse: bool) -> None:
        ordered = grouped[n][::-1] if reverse else grouped[n]
        body = {"updates": [{"pubid": p, "added": stamps[(n, reverse)]} for p in ordered]}
        async with Client(bases, traffic, start=n + reverse) as one:
            await one.call("PATCH", "/items", expect=200, headers=login.auth, json=body)

    await asyncio.gather(*(batch(n, reverse) for n in range(groups) for reverse in (False, True)))
    return Crossing(name, grouped, stamps)


def unique_prefix(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}"
