"""One proof run against a ready target: baseline, load with sampling, final state, every
reconciliation, the plots and the report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadtests import database, plots, reconcile, report
from loadtests.locust_run import LocustPlan, LocustRun, read_request_counts
from loadtests.reconcile import Check
from loadtests.sampler import Sampler
from tooling.gunicorn import Gunicorn
from tooling.ledger import read_ledger
from tooling.metrics import Snapshot, scrape

SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class Target:
    url: str
    database_url: str | None = None
    workers: int | None = None  # known when the proof started the deployment
    server: Gunicorn | None = None

    @property
    def owned(self) -> bool:
        return self.server is not None


def _settle(http: httpx.Client) -> tuple[Snapshot, int]:
    """The final scrape, once nothing is in flight (or SETTLE_SECONDS passed). Returns it
    and how many scrapes it took (all but the last are counted in it)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    attempts = 0
    while True:
        attempts += 1
        snapshot = scrape(http)
        idle = sum(snapshot.in_progress.values()) <= 1 and not sum(
            snapshot.pool_checked_out.values()
        )
        if idle or time.monotonic() > deadline:
            return snapshot, attempts
        time.sleep(0.3)


def wait_ready(url: str, workers: int | None, *, timeout: float) -> Snapshot:
    """Until /readyz answers 200 and `workers` workers have built their pool (each sets its
    slot's db_pool_size gauge in its lifespan). Returns the last /metrics snapshot."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if http.get("/readyz").status_code == 200:
                    snapshot = scrape(http)
                    if workers is None or len(snapshot.live_slots) >= workers:
                        return snapshot
                    last_error = f"{len(snapshot.live_slots)} of {workers} workers booted"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {last_error}")


def run_locust(plan: LocustPlan, say: Callable[[str], None]) -> list[int]:
    run = LocustRun(plan)
    mode = f"master + {plan.distributed_workers} workers" if plan.distributed_workers else "local"
    say(f"locust ({mode}): {plan.users} users for {plan.run_seconds}s against {plan.host}")
    run.start()
    try:
        budget = plan.run_seconds + plan.stop_timeout + 120
        codes = run.wait(timeout=budget)
    finally:
        run.stop()
    say(f"locust finished, exit codes {codes} (logs: {', '.join(p.name for p in run.logs)})")
    return codes


def _bad_lines(text: str) -> list[str]:
    markers = ("Traceback", "[CRITICAL]", "WORKER TIMEOUT")
    return [line for line in text.splitlines() if any(m in line for m in markers)]


def _server_log_check(server: Gunicorn, *, since: int) -> Check:
    """Tracebacks or worker timeouts logged from the baseline on; earlier ones (boot, the
    readiness polling) are mentioned without failing the run."""
    with server.log_path.open("rb") as handle:
        before = handle.read(since).decode(errors="replace")
        during = handle.read().decode(errors="replace")
    bad = _bad_lines(during)
    detail = f"{len(bad)} lines, first: {bad[0][:160]}" if bad else "no tracebacks or timeouts"
    if booting := _bad_lines(before):
        detail += f" (before the run: {len(booting)}, first: {booting[0][:120]})"
    return Check("6. gunicorn log clean during the run", not bad, detail)


def gates_check(plan: LocustPlan, codes: list[int]) -> tuple[Check, dict[str, Any]]:
    if not plan.gates_file.exists():
        return Check("5. Locust gates", False, f"no verdict written; exit codes {codes}"), {}
    verdict: dict[str, Any] = json.loads(plan.gates_file.read_text())
    passed = bool(verdict["passed"]) and all(code == 0 for code in codes)
    figures = verdict["figures"]
    detail = "; ".join(verdict["breaches"]) or (
        f"{figures['requests']} requests, {figures['failures']} failures, "
        f"{figures['rps']:.1f} req/s; every latency gate held"
    )
    if any(codes):
        detail += f"; locust exit codes {codes}"
    return Check("5. Locust gates", passed, detail), verdict


def run_and_reconcile(
    target: Target,
    plan: LocustPlan,
    *,
    setup: dict[str, str],
    sample_interval: float,
    say: Callable[[str], None],
) -> report.ProofResult:
    out_dir = plan.out_dir
    baseline = wait_ready(target.url, target.workers, timeout=90)
    say(f"{len(baseline.live_slots)} workers ready at {target.url}")
    log_offset = target.server.log_path.stat().st_size if target.server is not None else 0
    owned_db = target.database_url if target.owned else None
    counts_before = database.table_counts(owned_db) if owned_db else None
    sampler = Sampler(target.url, baseline, interval=sample_interval, say=say)
    sampler.start()
    try:
        codes = run_locust(plan, say)
    finally:
        sampler.stop()
    try:
        with httpx.Client(base_url=target.url, timeout=10) as http:
            final, attempts = _settle(http)
    except httpx.HTTPError as exc:
        return _unreachable(target, plan, codes, setup=setup, error=exc, say=say)

    locust_counts, _failures = read_request_counts(Path(f"{plan.csv_prefix}_stats.csv"))
    ledger = read_ledger(plan.ledger_dir)
    server_counts = final.by_route()
    server_counts.subtract(baseline.by_route())
    route_check, route_rows = reconcile.routes(
        locust_counts,
        server_counts,
        scrapes=1 + sampler.scrapes + attempts - 1,
        per_process=ledger.requests,
    )
    per_slot = {
        slot: value - baseline.worker_requests.get(slot, 0.0)
        for slot, value in final.worker_requests.items()
    }
    worker_check, worker_rows = reconcile.workers(
        per_slot,
        final.live_slots,
        route_total=sum(server_counts.values()),
        pids_seen=ledger.worker_pids,
    )
    rows = None
    table_delta = None
    if target.database_url:
        rows = database.inspect(
            target.database_url,
            users=ledger.users_created | ledger.users_deleted,
            items=set(ledger.items_created),
            hot_items={pubid for table, pubid in ledger.hot_values if table == "items"},
        )
        if counts_before is not None:
            table_delta = (
                rows.users_total - counts_before[0],
                rows.items_total - counts_before[1],
            )
    verdict_check, verdict = gates_check(plan, codes)
    checks = [
        route_check,
        worker_check,
        *reconcile.database(ledger, rows, table_delta),
        *reconcile.final_state(final, baseline),
        reconcile.throttled_logins(ledger, final, baseline),
        verdict_check,
    ]
    if target.server is not None:
        checks.append(_server_log_check(target.server, since=log_offset))
    result = report.ProofResult(
        setup=setup,
        checks=checks,
        routes=route_rows,
        workers=worker_rows,
        verdict=verdict,
        ledger=ledger,
    )
    _draw(result, sampler, out_dir)
    path = report.write(result, out_dir)
    _print_summary(result, say)
    say(f"report: {path}")
    return result


def _unreachable(
    target: Target,
    plan: LocustPlan,
    codes: list[int],
    *,
    setup: dict[str, str],
    error: Exception,
    say: Callable[[str], None],
) -> report.ProofResult:
    detail = f"final /metrics scrape failed: {error!r}"
    if target.server is not None and target.server.process.poll() is not None:
        detail += f"; gunicorn exited during the run with {target.server.process.returncode}"
    verdict_check, verdict = gates_check(plan, codes)
    result = report.ProofResult(
        setup=setup,
        checks=[Check("0. deployment reachable after the run", False, detail), verdict_check],
        verdict=verdict,
        ledger=read_ledger(plan.ledger_dir),
    )
    path = report.write(result, plan.out_dir)
    _print_summary(result, say)
    say(f"report: {path}")
    return result


def _draw(result: report.ProofResult, sampler: Sampler, out: Path) -> None:
    plots.requests_per_worker(result.workers, sampler.samples, out / "requests_per_worker.png")
    result.plots.append("requests_per_worker.png")
    plots.pool_usage(sampler.samples, out / "pool.png")
    result.plots.append("pool.png")


def _print_summary(result: report.ProofResult, say: Callable[[str], None]) -> None:
    say("")
    for scenario, figures in sorted(result.verdict.get("figures", {}).get("scenarios", {}).items()):
        say(
            f"  {scenario:<11} {figures['requests']:>7} requests {figures['failures']:>4} failed"
            f"   p50 {figures['p50_ms']:>5.0f}  p95 {figures['p95_ms']:>5.0f}"
            f"  p99 {figures['p99_ms']:>5.0f} ms"
        )
    say("  per worker: " + ", ".join(
        f"{w.slot}: {w.requests} ({w.share:.1%})" for w in result.workers
    ))  # fmt: skip
    for check in result.checks:
        say(f"  {check.label}  {check.name}: {check.detail}")
    say(f"RESULT: {'PASS' if result.passed else 'FAIL'}")
