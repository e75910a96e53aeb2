"""Locust event hooks (registered on import): our options, which user classes run (--mix,
--tags), latency per scenario (merged across distributed workers), the ledger's per-process
summary, the drain that makes a distributed run's counts exact, and the gates that set the
exit code.

Imported by the locustfile only (it imports locust, hence gevent's monkey-patching)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import RequestStats, StatsEntry

from loadtests import gates
from loadtests.base import STATE
from tooling.ledger import LedgerWriter

logger = logging.getLogger("loadtests")

SCENARIO_STATS = RequestStats(use_response_times_cache=False)
REPORT_KEY = "loadtest_scenarios"
DRAIN, DRAINED = "loadtest:drain", "loadtest:drained"
DRAIN_GRACE_SECONDS = 15.0
_drained: set[str] = set()
_draining: list[bool] = []


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("loadtests (gates, scenarios, ledger)")
    group.add_argument(
        "--mix",
        default="",
        help="Scenario weights, e.g. browse=3,write=2,signup=1,contention=2,polling=1 "
        f"(scenarios: {', '.join(gates.SCENARIOS)}; those left out do not run)",
    )
    group.add_argument("--max-fail-ratio", type=float, default=0.0)
    group.add_argument(
        "--p95-ms",
        default=gates.DEFAULT_P95_MS,
        help="p95 latency gate per scenario, ms (default=N applies to the others)",
    )
    group.add_argument("--p99-ms", default=gates.DEFAULT_P99_MS)
    group.add_argument("--min-rps", type=float, default=0.0)
    group.add_argument("--gates-file", default="", help="write the gates' verdict here (JSON)")
    group.add_argument("--ledger-dir", default="", help="record acknowledged writes here")
    group.add_argument(
        "--run-id",
        default=os.urandom(4).hex(),
        help="names the shared contention accounts (a master forwards its own)",
    )


def on_init(environment: Environment, runner: Runner, **_: Any) -> None:
    options = environment.parsed_options
    assert options is not None
    # Fail fast on a bad gate spec, before any load is sent.
    gates.parse_spec(options.p95_ms)
    gates.parse_spec(options.p99_ms)
    if isinstance(runner, WorkerRunner):
        runner.register_message(DRAIN, on_drain, concurrent=True)
    else:
        select_user_classes(environment)
    if isinstance(runner, MasterRunner):
        runner.register_message(DRAINED, lambda msg, **_: _drained.add(msg.node_id))
    elif options.ledger_dir:
        STATE.ledger = LedgerWriter(Path(options.ledger_dir))


def select_user_classes(environment: Environment) -> None:
    """Apply --mix weights and drop classes that --tags/--exclude-tags leave without tasks
    (Locust would otherwise spawn them and fail)."""
    mix = gates.parse_spec(getattr(environment.parsed_options, "mix", ""))
    environment._filter_tasks_by_tags()  # Locust's own, which otherwise runs at test start
    for user_class in environment.user_classes:
        if mix:
            weight = mix.get(getattr(user_class, "scenario", ""), 0)
            user_class.weight = round(weight * getattr(user_class, "weight_factor", 1))
    kept = [user for user in environment.user_classes if user.weight > 0 and user.tasks]
    if not kept:
        raise ValueError("no user class left to run: check --mix, --tags and the class names")
    environment.user_classes[:] = kept
    logger.info("scenarios: %s", ", ".join(f"{c.__name__}={c.weight}" for c in kept))


def on_request(
    request_type: str, name: str, response: Any, context: dict[str, Any], **request: Any
) -> None:
    STATE.requests[f"{request_type} {name}"] += 1
    if name == "/auth/token" and getattr(response, "status_code", None) == 429:
        STATE.throttled_logins += 1
    headers = getattr(response, "headers", None)
    STATE.worker_pids[str((headers and headers.get("x-worker-id")) or "none")] += 1
    entry = SCENARIO_STATS.get(context.get("scenario") or "other", "")
    entry.log(round(request["response_time"] or 0), request["response_length"])
    if request["exception"] is not None:
        entry.log_error(request["exception"])


def on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    data[REPORT_KEY] = SCENARIO_STATS.serialize_stats()


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


def on_test_stopping(environment: Environment, **_: Any) -> None:
    """Master: Locust's own quit sends "quit" and waits 0.5 s for final reports, which
    loses the last seconds of any worker whose users take longer to stop. Drain first."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner) or _draining:
        return
    _draining.append(True)
    clients = {client.id for client in runner.clients.all}
    runner.send_message(DRAIN)
    deadline = time.monotonic() + float(environment.stop_timeout or 0) + DRAIN_GRACE_SECONDS
    while not clients <= _drained and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if missing := clients - _drained:
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
    STATE.requests, STATE.worker_pids, STATE.throttled_logins = Counter(), Counter(), 0


def _scenario_figures(entry: StatsEntry) -> dict[str, float]:
    figures: dict[str, float] = {"requests": entry.num_requests, "failures": entry.num_failures}
    for percent in (50, 95, 99):
        figures[f"p{percent}_ms"] = float(entry.get_response_time_percentile(percent / 100) or 0)
    return figures | {"max_ms": float(entry.max_response_time or 0)}


def on_quitting(environment: Environment, **_: Any) -> None:
    runner, options = environment.runner, environment.parsed_options
    if runner is None or isinstance(runner, WorkerRunner) or options is None:
        return
    total = environment.stats.total
    scenarios = SCENARIO_STATS.entries.values()
    figures: dict[str, Any] = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "fail_ratio": total.fail_ratio,
        "exceptions": sum(int(e.get("count", 1)) for e in runner.exceptions.values()),
        "rps": float(total.total_rps or 0),
        "scenarios": {e.name: _scenario_figures(e) for e in scenarios if e.num_requests},
        "routes": {
            f"{e.method} {e.name}": e.num_requests for e in environment.stats.entries.values()
        },
    }
    limits = {
        "max_fail_ratio": options.max_fail_ratio,
        "p95_ms": gates.parse_spec(options.p95_ms),
        "p99_ms": gates.parse_spec(options.p99_ms),
        "min_rps": options.min_rps,
    }
    found = gates.breaches(figures, limits)
    if options.gates_file:
        verdict = {"passed": not found, "breaches": found, "figures": figures, "gates": limits}
        Path(options.gates_file).write_text(json.dumps(verdict, indent=2), encoding="utf-8")
    for name, f in sorted(figures["scenarios"].items()):
        logger.info(
            "scenario %-10s %6d requests %4d failures  p50 %5.0f  p95 %5.0f  p99 %5.0f ms",
            *(name, f["requests"], f["failures"], f["p50_ms"], f["p95_ms"], f["p99_ms"]),
        )
    for breach in found:
        logger.error("GATE BREACHED: %s", breach)
    logger.info("gates: %s", "FAIL" if found else "PASS")
    environment.process_exit_code = 1 if found else 0


HOOKS: list[tuple[Any, Callable[..., None]]] = [
    (events.init_command_line_parser, add_arguments),
    (events.init, on_init),
    (events.request, on_request),
    (events.report_to_master, on_report_to_master),
    (events.worker_report, on_worker_report),
    (events.test_stopping, on_test_stopping),
    (events.test_stop, on_test_stop),
    (events.quitting, on_quitting),
]
for hook, listener in HOOKS:
    hook.add_listener(listener)
