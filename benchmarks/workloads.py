"""The workloads: one wrk run each (some with a second load beside it), measured together
with the machine's CPU and the new PostgreSQL sessions opened while it ran."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.database import BenchDatabase
from benchmarks.machine import CpuTimes, cpu_used_since, tree_cpu_seconds, wait_for_quiet
from benchmarks.scrape import Scraper
from benchmarks.servers import RunningServer
from benchmarks.wrk import WrkProcess, WrkResult

# Backends flush pg_stat_database counters within about a second of going idle.
STATS_SETTLE_SECONDS = 1.2


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    title: str
    script: str
    path: str = "/"
    connections: int | None = None  # None: the run's --connections


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload(
            "steady", "steady one-row reads from a cold start (pool fill included)", "read.lua"
        ),
        Workload("read", "one-row read GET /items/{pubid}", "read.lua"),
        Workload("user", "unauthenticated one-row read GET /users/{pubid}", "user.lua"),
        Workload("insert", "insert POST /items", "insert.lua"),
        Workload("list", "list GET /users?limit=50", "list.lua", "/users?limit=50"),
        Workload("signup", "one-row reads during a sign-up storm (bcrypt 12)", "read.lua"),
        Workload("scrape", "one-row reads while /metrics is scraped", "read.lua"),
        Workload("flood", "one-row reads during a 48-client sign-up flood (bcrypt 12)", "read.lua"),
        Workload("c10", "one-row reads, 10 connections", "read.lua", connections=10),
        Workload("c200", "one-row reads, 200 connections", "read.lua", connections=200),
        Workload("c1000", "one-row reads, 1000 connections", "read.lua", connections=1000),
    )
}
# Issue 13's acceptance load: 48 sign-up clients against 4 workers (config gunicorn-4w).
FLOOD_CONNECTIONS = 48


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    steady_duration_s: float
    connections: int
    signup_connections: int
    scrape_interval_s: float
    quiet_threshold_pct: float
    quiet_wait_s: float


@dataclass(slots=True)
class Sample:
    config: str
    workload: str
    round: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non_2xx: int
    timeouts: int
    new_pg_sessions: int | None
    wrk_cpu_pct: float
    system_cpu_pct: float  # the whole machine, all cores (100 % = both cores busy)
    steal_pct: float
    server_cpu_pct: float  # the server's processes, same scale
    pg_cpu_pct: float | None  # the embedded PostgreSQL's processes
    foreign_cpu_pct: float  # everything else: other users of this shared machine
    server_cpu_ms_per_request: float
    extra: dict[str, float] = field(default_factory=dict)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def _extra_from(prefix: str, result: WrkResult) -> dict[str, float]:
    return {
        f"{prefix}_rps": result.rps,
        f"{prefix}_p50_ms": result.p50_ms,
        f"{prefix}_p99_ms": result.p99_ms,
        f"{prefix}_max_ms": result.max_ms,
        f"{prefix}_errors": float(result.errors + result.timeouts),
        f"{prefix}_wrk_cpu_pct": result.cpu_pct,
    }


def run_workload(
    server: RunningServer,
    workload: Workload,
    *,
    round_number: int,
    database: BenchDatabase,
    data_file: Path,
    options: Options,
) -> Sample:
    duration = options.steady_duration_s if workload.key == "steady" else options.duration_s
    url = server.url + workload.path
    waited, background = wait_for_quiet(
        threshold_pct=options.quiet_threshold_pct, max_wait_s=options.quiet_wait_s
    )
    extra: dict[str, float] = {"quiet_wait_s": waited, "background_cpu_pct": background}
    sessions_before = database.sessions()
    postmaster = database.postmaster_pid()
    server_before = tree_cpu_seconds([server.process.pid])
    pg_before = tree_cpu_seconds([postmaster]) if postmaster else {}
    harness_before = time.process_time()
    started = time.monotonic()
    cpu_before = CpuTimes.now()

    side_load = None
    scraper = None
    if workload.key in {"signup", "flood"}:
        prefix = f"{workload.key[0]}{round_number}{server.config.key.replace('-', '')[:11]}"
        side_load = WrkProcess(
            server.url,
            "signup.lua",
            connections=(
                FLOOD_CONNECTIONS if workload.key == "flood" else options.signup_connections
            ),
            duration_s=duration,
            script_args=[prefix],
            timeout_s=10,
        )
    elif workload.key == "scrape":
        scraper = Scraper(server.port, interval_s=options.scrape_interval_s)
        scraper.start()

    main = WrkProcess(
        url,
        workload.script,
        connections=workload.connections or options.connections,
        duration_s=duration,
        script_args=[str(data_file)],
    )
    result = main.finish()
    wrk_cpu_s = result.cpu_s
    if side_load is not None:
        side = side_load.finish()
        wrk_cpu_s += side.cpu_s
        extra.update(_extra_from(workload.key, side))
    if scraper is not None:
        scraper.finish()
        latencies = scraper.latencies_ms
        extra.update(
            scrape_count=float(len(latencies)),
            scrape_failures=float(scraper.failures),
            scrape_p50_ms=percentile(latencies, 50),
            scrape_p99_ms=percentile(latencies, 99),
            scrape_max_ms=max(latencies, default=0.0),
        )
    cpu_after = CpuTimes.now()
    capacity = (time.monotonic() - started) * (os.cpu_count() or 1) / 100  # seconds per %
    busy, steal = cpu_after.usage_since(cpu_before)
    server_s = cpu_used_since(server_before, tree_cpu_seconds([server.process.pid]))
    pg_s = cpu_used_since(pg_before, tree_cpu_seconds([postmaster])) if postmaster else None
    own_s = server_s + (pg_s or 0.0) + wrk_cpu_s + time.process_time() - harness_before
    foreign_s = max(0.0, cpu_after.busy_seconds_since(cpu_before) - own_s)
    time.sleep(STATS_SETTLE_SECONDS)
    sessions_after = database.sessions()
    new_sessions = (
        None
        if sessions_before is None or sessions_after is None
        else sessions_after - sessions_before
    )
    return Sample(
        config=server.config.key,
        workload=workload.key,
        round=round_number,
        requests=result.requests,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        max_ms=result.max_ms,
        errors=result.errors,
        non_2xx=result.non_2xx,
        timeouts=result.timeouts,
        new_pg_sessions=new_sessions,
        wrk_cpu_pct=result.cpu_pct,
        system_cpu_pct=busy,
        steal_pct=steal,
        server_cpu_pct=server_s / capacity,
        pg_cpu_pct=None if pg_s is None else pg_s / capacity,
        foreign_cpu_pct=foreign_s / capacity,
        server_cpu_ms_per_request=1000 * server_s / result.requests if result.requests else 0.0,
        extra=extra,
    )


def warm_up(server: RunningServer, *, data_file: Path, connections: int, seconds: float) -> None:
    if seconds <= 0:
        return
    WrkProcess(
        server.url,
        "read.lua",
        connections=connections,
        duration_s=seconds,
        script_args=[str(data_file)],
    ).finish()
