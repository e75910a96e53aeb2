"""Locust event hooks: latency per scenario (merged across distributed workers), the
ledger, the drain that makes a distributed run's counts exact, and the gates that set the
exit code. Options and scenario selection live in locust_options.

Imported by the locustfile only (it imports locust, hence gevent's monkey-patching)."""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, RequestStats, StatsCSV, StatsEntry

from loadtests import gates
from loadtests.locust_options import add_arguments, select_user_classes
from loadtests.scenarios.base import STATE
from tooling.ledger import LedgerWriter

logger = logging.getLogger("loadtests")

SCENARIO_STATS = RequestStats(use_response_times_cache=False)
REPORT_KEY = "loadtest_scenarios"
DRAIN, DRAINED = "loadtest:drain", "loadtest:drained"
DRAIN_GRACE_SECONDS = 15.0
_drain: dict[str, Any] = {"started": False, "done": set()}


def on_request(
    *,
    request_type: str,
    name: str,
    response_time: float | None,
    response_length: int,
    response: Any = None,
    context: dict[str, Any] | None = None,
    exception: Any = None,
    **_: Any,
) -> None:
    STATE.requests[f"{request_type} {name}"] += 1
    if name == "/auth/token" and getattr(response, "status_code", None) == 429:
        STATE.throttled_logins += 1
    headers = getattr(response, "headers", None)
    worker = headers.get("x-worker-id") if headers else None
    STATE.worker_pids[str(worker or "none")] += 1
    scenario = (context or {}).get("scenario") or "other"
    entry = SCENARIO_STATS.get(scenario, "")
    entry.log(round(response_time or 0), response_length)
    if exception is not None:
        entry.log_error(exception)


def on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    data[REPORT_KEY] = [
        entry.get_stripped_report()
        for entry in SCENARIO_STATS.entries.values()
        if entry.num_requests or entry.num_failures
    ]


def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    for raw in data.get(REPORT_KEY, []):
        incoming = StatsEntry.unserialize(raw, SCENARIO_STATS)
        SCENARIO_STATS.get(incoming.name, "").extend(incoming)


def on_drain(environment: Environment, msg: Any, **_: Any) -> None:
    """Worker: stop users gracefully (each finishes its task, so every request it sent is
    counted), send the final statistics, then tell the master."""
    runner = environment.runner
    assert isinstance(runner, WorkerRunner)
    runner.stop()
    runner._send_stats()
    runner.send_message(DRAINED, {"pid": os.getpid()})


def on_drained(environment: Environment, msg: Any, **_: Any) -> None:
    _drain["done"].add(msg.node_id)


def on_test_stopping(environment: Environment, **_: Any) -> None:
    """Master: Locust's own quit sends "quit" and waits 0.5 s for final reports, which
    loses the last seconds of any worker whose users take longer to stop. Drain first."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner) or _drain["started"]:
        return
    _drain["started"] = True
    clients = {client.id for client in runner.clients.all}
    runner.send_message(DRAIN)
    deadline = time.monotonic() + float(environment.stop_timeout or 0) + DRAIN_GRACE_SECONDS
    while not clients <= _drain["done"] and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if missing := clients - _drain["done"]:
        logger.error("workers that did not drain in time: %s", ", ".join(sorted(missing)))
    else:
        logger.info("all %d workers drained", len(clients))


def on_test_stop(environment: Environment, **_: Any) -> None:
    if STATE.ledger is None:
        return
    role = "worker" if isinstance(environment.runner, WorkerRunner) else "local"
    STATE.ledger.process_summary(
        requests=dict(STATE.requests),
        worker_pids=dict(STATE.worker_pids),
        role=role,
        throttled_logins=STATE.throttled_logins,
    )
    STATE.throttled_logins = 0
    STATE.requests.clear()
    STATE.worker_pids.clear()


def run_figures(environment: Environment, runner: Runner) -> gates.RunFigures:
    total = environment.stats.total
    scenarios = {
        entry.name: gates.ScenarioFigures(
            requests=entry.num_requests,
            failures=entry.num_failures,
            p50_ms=float(entry.get_response_time_percentile(0.5) or 0),
            p95_ms=float(entry.get_response_time_percentile(0.95) or 0),
            p99_ms=float(entry.get_response_time_percentile(0.99) or 0),
            max_ms=float(entry.max_response_time or 0),
        )
        for entry in SCENARIO_STATS.entries.values()
        if entry.num_requests
    }
    return gates.RunFigures(
        requests=total.num_requests,
        failures=total.num_failures,
        exceptions=sum(int(e.get("count", 1)) for e in runner.exceptions.values()),
        rps=float(total.total_rps or 0),
        scenarios=scenarios,
    )


def rewrite_stats_csv(environment: Environment, prefix: str) -> None:
    """Locust rewrites <prefix>_stats.csv once a second and not at exit, so the file can miss
    the last second (and everything counted while users stopped). Write the final totals."""
    with open(f"{prefix}_stats.csv", "w", newline="", encoding="utf-8") as handle:
        StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(handle))


def on_quitting(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    options = environment.parsed_options
    if runner is None or isinstance(runner, WorkerRunner) or options is None:
        return
    limits = gates.Gates(
        max_fail_ratio=options.max_fail_ratio,
        p95_ms=gates.parse_spec(options.p95_ms),
        p99_ms=gates.parse_spec(options.p99_ms),
        min_rps=options.min_rps,
    )
    figures = run_figures(environment, runner)
    if getattr(options, "csv_prefix", None):
        rewrite_stats_csv(environment, options.csv_prefix)
    if options.gates_file:
        found = gates.write_verdict(Path(options.gates_file), figures, limits)
    else:
        found = gates.breaches(figures, limits)
    for name, scenario in sorted(figures.scenarios.items()):
        logger.info(
            "scenario %-10s %6d requests %4d failures  p50 %5.0f  p95 %5.0f  p99 %5.0f ms",
            name,
            scenario.requests,
            scenario.failures,
            scenario.p50_ms,
            scenario.p95_ms,
            scenario.p99_ms,
        )
    for breach in found:
        logger.error("GATE BREACHED: %s", breach)
    logger.info("gates: %s", "FAIL" if found else "PASS")
    environment.process_exit_code = 1 if found else 0


def on_init(environment: Environment, runner: Runner, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None:
        # Fail fast on a bad gate spec, before any load is sent.
        gates.parse_spec(options.p95_ms)
        gates.parse_spec(options.p99_ms)
    if not isinstance(runner, WorkerRunner):
        select_user_classes(environment)
    if options is not None and options.ledger_dir and not isinstance(runner, MasterRunner):
        STATE.ledger = LedgerWriter(Path(options.ledger_dir))
    if isinstance(runner, WorkerRunner):
        runner.register_message(DRAIN, on_drain, concurrent=True)
    if isinstance(runner, MasterRunner):
        runner.register_message(DRAINED, on_drained)


def install() -> None:
    hooks: list[tuple[Any, Callable[..., None]]] = [
        (events.init_command_line_parser, add_arguments),
        (events.init, on_init),
        (events.request, on_request),
        (events.report_to_master, on_report_to_master),
        (events.worker_report, on_worker_report),
        (events.test_stopping, on_test_stopping),
        (events.test_stop, on_test_stop),
        (events.quitting, on_quitting),
    ]
    for hook, listener in hooks:
        hook.add_listener(listener)
