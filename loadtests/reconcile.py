"""The proof's reconciliations, as pure functions over what was measured. Each returns a
`Check` (passed, or failed with the reason); the proof fails when any check fails."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from loadtests.database import RowCheck
from tooling.ledger import Ledger
from tooling.metrics import RouteKey, Snapshot

METRICS_ROUTE: RouteKey = ("GET", "/metrics")


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

    @property
    def matches(self) -> bool:
        return self.locust == self.server


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
    rows = [RouteRow(method, route, expected[method, route], server[method, route])
            for method, route in keys]  # fmt: skip
    wrong = [row for row in rows if not row.matches]
    problems = [f"{row.method} {row.route}: locust {row.locust} != server {row.server}"
                for row in wrong]  # fmt: skip
    if per_process is not None:
        summed = Counter({tuple(key.split(" ", 1)): value for key, value in per_process.items()})
        if summed != locust:
            problems.append("the Locust processes' own counts do not add up to Locust's CSV")
    total = sum(locust.values())
    if total == 0:
        problems.append("Locust made no requests")
    detail = "; ".join(problems) or (
        f"{total} requests over {len(rows) - 1} routes match exactly (+{scrapes} /metrics scrapes)"
    )
    return Check("1. Locust count per route == /metrics increase", not problems, detail), rows


def workers(
    per_slot: dict[str, float],
    live_slots: list[str],
    *,
    route_total: int,
    pids_seen: Counter[str] | None = None,
) -> tuple[Check, list[WorkerRow]]:
    total = round(sum(per_slot.values()))
    # Live workers, and any other slot that served during the run (a worker that exited).
    served = {slot for slot, value in per_slot.items() if value > 0}
    slots = sorted(served | set(live_slots), key=lambda s: (len(s), s))
    rows = [
        WorkerRow(slot, round(per_slot.get(slot, 0)), per_slot.get(slot, 0) / total if total else 0)
        for slot in slots
    ]
    problems = [f"worker {row.slot} served nothing" for row in rows if row.requests <= 0]
    if total != route_total:
        problems.append(f"per-worker counters sum to {total}, per-route counters to {route_total}")
    pids = {pid for pid in (pids_seen or {}) if pid != "none"}
    if pids_seen is not None and len(pids) < len(live_slots):
        problems.append(f"Locust saw X-Worker-Id from {len(pids)} pids, {len(live_slots)} live")
    shares = ", ".join(f"{row.slot}: {row.share:.1%}" for row in rows)
    detail = "; ".join(problems) or f"{len(rows)} workers, shares {shares}"
    return Check("2. every worker served a share", not problems, detail), rows


def _rows_check(name: str, expected: set[str], present: set[str], *, gone: bool) -> Check:
    if not expected:
        return Check(name, None, "none in this run")
    wrong = expected & present if gone else expected - present
    what = "still present" if gone else "missing"
    if wrong:
        sample = ", ".join(sorted(wrong)[:3])
        return Check(name, False, f"{len(wrong)} of {len(expected)} {what} (e.g. {sample})")
    verb = "gone" if gone else "present"
    return Check(name, True, f"{len(expected)} of {len(expected)} {verb}")


def database(
    ledger: Ledger, rows: RowCheck | None, table_delta: tuple[int, int] | None
) -> list[Check]:
    if rows is None:
        return [Check("3. rows in PostgreSQL", None, "no database URL: not checked")]
    users, items = rows.users_present, rows.items_present
    checks = [
        _rows_check("3a. created users exist", ledger.users_expected, users, gone=False),
        _rows_check("3b. deleted users are gone", ledger.users_deleted, users, gone=True),
        _rows_check("3c. created items exist", ledger.items_expected, items, gone=False),
        _rows_check("3d. deleted items are gone", ledger.items_gone, items, gone=True),
        hot_rows(ledger, rows),
    ]
    if table_delta is not None:
        expected = (ledger.user_rows_delta, ledger.item_rows_delta)
        checks.append(
            Check(
                "3f. row counts changed by exactly what Locust saw",
                table_delta == expected,
                f"users {table_delta[0]:+d} (expected {expected[0]:+d}), "
                f"items {table_delta[1]:+d} (expected {expected[1]:+d})",
            )
        )
    return checks


def hot_rows(ledger: Ledger, rows: RowCheck) -> Check:
    """Rows many clients wrote at once hold a value one of them was told was written."""
    name = "3e. contended rows hold an acknowledged value"
    if not ledger.hot_values:
        return Check(name, None, "no contended writes in this run")
    wrong = []
    for (table, pubid), values in ledger.hot_values.items():
        if table == "users":
            ok = rows.users_fullname.get(pubid) in values
        else:
            stored = rows.items_added.get(pubid)
            ok = stored is not None and stored in {datetime.fromisoformat(v) for v in values}
        if not ok:
            wrong.append(f"{table} {pubid}")
    writes = sum(len(values) for values in ledger.hot_values.values())
    detail = (
        f"{len(wrong)} rows hold a value no client was acknowledged: {', '.join(wrong[:3])}"
        if wrong
        else f"{len(ledger.hot_values)} rows, {writes} distinct acknowledged writes"
    )
    return Check(name, not wrong, detail)


def _server_error_routes(final: Snapshot, baseline: Snapshot) -> str:
    counts = {
        f"{status} {method} {route}": round(
            value - baseline.requests.get((method, route, status), 0)
        )
        for (method, route, status), value in final.requests.items()
        if status[:1] == "5"
    }
    return ", ".join(f"{key} x{count}" for key, count in sorted(counts.items()) if count)


def final_state(final: Snapshot, baseline: Snapshot) -> list[Check]:
    errors = round(final.server_errors() - baseline.server_errors())
    in_flight = sum(final.in_progress.values()) - 1  # the scrape that reads this is in flight
    checked_out = sum(final.pool_checked_out.values())
    retries = {
        kind: round(final.db_errors.get(kind, 0) - baseline.db_errors.get(kind, 0))
        for kind in final.db_errors
    }
    retried = ", ".join(f"{kind} {count}" for kind, count in sorted(retries.items()) if count)
    return [
        Check(
            "4a. zero 5xx",
            errors == 0,
            f"{errors} responses with status 5xx"
            + (f": {_server_error_routes(final, baseline)}" if errors else "")
            + (f" (db errors: {retried})" if retried else ""),
        ),
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
