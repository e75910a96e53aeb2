"""The proof's reconciliations of what was measured (Locust, /metrics, the ledger and the
rows in PostgreSQL). Each returns a `Check` (passed, or failed with the reason); the proof
fails when any check fails."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tooling.database import fetch
from tooling.ledger import Ledger
from tooling.metrics import RouteKey, Snapshot

METRICS_ROUTE: RouteKey = ("GET", "/metrics")


def increase(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per key (a worker slot, an error kind): how much a counter grew."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: skipped (nothing to compare against)
    detail: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


@dataclass(frozen=True)
class RouteRow:
    method: str
    route: str
    locust: int
    server: int


@dataclass(frozen=True)
class WorkerRow:
    slot: str
    requests: int
    share: float


def routes(
    locust: Counter[RouteKey],
    server: Counter[RouteKey],
    *,
    scrapes: int,
    per_process: Counter[str] | None = None,
) -> tuple[Check, list[RouteRow]]:
    """Locust's count per route == the increase of the server's counter, route by route.
    /metrics is the proof's own traffic: `scrapes` requests (the baseline scrape counts
    once it has answered; the final one not yet)."""
    expected = Counter(locust)
    expected[METRICS_ROUTE] += scrapes
    keys = sorted(set(expected) | {key for key, value in server.items() if value})
    rows = [
        RouteRow(method, route, expected[method, route], server[method, route])
        for method, route in keys
    ]
    problems = [
        f"{row.method} {row.route}: locust {row.locust} != server {row.server}"
        for row in rows
        if row.locust != row.server
    ]
    if per_process is not None:
        summed = Counter({tuple(key.split(" ", 1)): value for key, value in per_process.items()})
        if summed != locust:
            problems.append("the Locust processes' own counts do not add up to Locust's stats")
    total = sum(locust.values())
    if total == 0:
        problems.append("Locust made no requests")
    detail = "; ".join(problems) or (
        f"{total} requests over {len(rows) - 1} routes match exactly (+{scrapes} /metrics scrapes)"
    )
    return Check("1. Locust count per route == /metrics increase", not problems, detail), rows


def workers(
    final: Snapshot, baseline: Snapshot, *, route_total: int, pids_seen: Counter[str]
) -> tuple[Check, list[WorkerRow]]:
    per_slot = increase(final.worker_requests, baseline.worker_requests)
    total = round(sum(per_slot.values()))
    # Live workers, and any other slot that served during the run (a worker that exited).
    served = {slot for slot, value in per_slot.items() if value > 0}
    slots = sorted(served | set(final.live_slots), key=lambda s: (len(s), s))
    rows = [
        WorkerRow(slot, round(per_slot.get(slot, 0)), per_slot.get(slot, 0) / total if total else 0)
        for slot in slots
    ]
    problems = [f"worker {row.slot} served nothing" for row in rows if row.requests <= 0]
    if total != route_total:
        problems.append(f"per-worker counters sum to {total}, per-route counters to {route_total}")
    pids, live = len(set(pids_seen) - {"none"}), len(final.live_slots)
    if pids < live:
        problems.append(f"Locust saw X-Worker-Id from {pids} pids, {live} live")
    shares = ", ".join(f"{row.slot}: {row.share:.1%}" for row in rows)
    detail = "; ".join(problems) or f"{len(rows)} workers, shares {shares}"
    return Check("2. every worker served a share", not problems, detail), rows


def _rows_check(name: str, expected: set[str], present: set[str], *, gone: bool) -> Check:
    if not expected:
        return Check(name, None, "none in this run")
    wrong = expected & present if gone else expected - present
    if wrong:
        what = f"{'still present' if gone else 'missing'} (e.g. {', '.join(sorted(wrong)[:3])})"
        return Check(name, False, f"{len(wrong)} of {len(expected)} {what}")
    return Check(name, True, f"{len(expected)} of {len(expected)} {'gone' if gone else 'present'}")


def _rows(url: str, table: str, column: str, pubids: set[str]) -> dict[str, Any]:
    """pubid -> `column`, for the rows of these pubids that exist."""
    query = f"SELECT pubid::text, {column} FROM {table} WHERE pubid = ANY($1::uuid[])"  # noqa: S608
    return dict(asyncio.run(fetch(url, query, sorted(pubids))))


def table_counts(url: str) -> tuple[int, int]:
    query = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items)"
    users, items = asyncio.run(fetch(url, query))[0]
    return int(users), int(items)


def database(url: str | None, ledger: Ledger, counts_before: tuple[int, int] | None) -> list[Check]:
    """Every row Locust saw created exists, every one it deleted is gone, each contended row
    holds a value one of its writers was acknowledged, and the tables grew by exactly that."""
    if url is None:
        return [Check("3. rows in PostgreSQL", None, "no database URL: not checked")]
    users = _rows(url, "users", "fullname", ledger.users_created | ledger.users_deleted)
    hot_items = {pubid for table, pubid in ledger.hot_values if table == "items"}
    items = _rows(url, "items", "added", set(ledger.items_created) | hot_items)
    checks = [
        _rows_check("3a. created users exist", ledger.users_expected, set(users), gone=False),
        _rows_check("3b. deleted users are gone", ledger.users_deleted, set(users), gone=True),
        _rows_check("3c. created items exist", ledger.items_expected, set(items), gone=False),
        _rows_check("3d. deleted items are gone", ledger.items_gone, set(items), gone=True),
        hot_rows(ledger, {"users": users, "items": items}),
    ]
    if counts_before is not None:
        users_after, items_after = table_counts(url)
        got = (users_after - counts_before[0], items_after - counts_before[1])
        expected = (ledger.user_rows_delta, ledger.item_rows_delta)
        detail = (
            f"users {got[0]:+d} (expected {expected[0]:+d}), "
            f"items {got[1]:+d} (expected {expected[1]:+d})"
        )
        checks.append(
            Check("3f. row counts changed by exactly what Locust saw", got == expected, detail)
        )
    return checks


def hot_rows(ledger: Ledger, stored: dict[str, dict[str, Any]]) -> Check:
    """Rows many clients wrote at once hold a value one of them was told was written."""
    name = "3e. contended rows hold an acknowledged value"
    if not ledger.hot_values:
        return Check(name, None, "no contended writes in this run")
    wrong = [
        f"{table} {pubid}"
        for (table, pubid), values in ledger.hot_values.items()
        if stored[table].get(pubid)
        not in (values if table == "users" else {datetime.fromisoformat(v) for v in values})
    ]
    writes = sum(len(values) for values in ledger.hot_values.values())
    detail = (
        f"{len(wrong)} rows hold a value no client was acknowledged: {', '.join(wrong[:3])}"
        if wrong
        else f"{len(ledger.hot_values)} rows, {writes} distinct acknowledged writes"
    )
    return Check(name, not wrong, detail)


def final_state(final: Snapshot, baseline: Snapshot) -> list[Check]:
    errors = round(final.server_errors() - baseline.server_errors())
    in_flight = sum(final.in_progress.values()) - 1  # the scrape that reads this is in flight
    checked_out = sum(final.pool_checked_out.values())
    detail = f"{errors} responses with status 5xx"
    if errors:
        by_route = {
            f"{status} {method} {route}": value - baseline.requests.get((method, route, status), 0)
            for (method, route, status), value in final.requests.items()
            if status[:1] == "5"
        }
        detail += ": " + ", ".join(f"{k} x{n:.0f}" for k, n in sorted(by_route.items()) if n)
    retries = increase(final.db_errors, baseline.db_errors)
    if retried := ", ".join(f"{k} {round(n)}" for k, n in sorted(retries.items()) if round(n)):
        detail += f" (db errors: {retried})"
    return [
        Check("4a. zero 5xx", errors == 0, detail),
        Check(
            "4b. gauges back to 0",
            in_flight == 0 and checked_out == 0,
            f"requests in progress {in_flight:.0f} (besides this scrape), "
            f"pool connections checked out {checked_out:.0f}",
        ),
    ]


def throttled_logins(ledger: Ledger, final: Snapshot, baseline: Snapshot) -> Check:
    """Every 429 Locust got from POST /auth/token is one the server counted as throttled
    (the abuse scenario's are expected; a password change is not in any scenario)."""
    server = round(final.logins_throttled - baseline.logins_throttled)
    return Check(
        "4c. throttled logins: Locust's 429s == auth_logins_throttled_total increase",
        ledger.throttled_logins == server,
        f"Locust {ledger.throttled_logins}, server {server}",
    )
