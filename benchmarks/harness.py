"""The run itself: seed once, then every configuration in every round, interleaved; each
workload is one wrk run (some with a second load beside it), measured together with the
machine's CPU and the new PostgreSQL sessions opened while it ran."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from benchmarks import servers
from benchmarks.measure import CpuMeter, Wrk, WrkError, wait_for_quiet
from benchmarks.servers import CONFIGS, RunningServer, ServerConfig, ServerFailedError
from tooling.database import execute, fetch_value
from tooling.processes import rss_mb
from tooling.seed import SeededUser, seed

_STARTED = time.monotonic()
JWT_SECRET = "benchmark-only-jwt-secret-not-for-production-0123456789"
# What the command line does not set; results.json's "run" records it, RESULTS.md tells it.
SETTINGS: dict[str, Any] = {
    "steady_duration_s": 20,  # the steady run, from a cold start
    "warmup_s": 2,  # per server start, before its first workload (not before the steady run)
    "signup_connections": 4,  # the sign-up storm beside the reads
    "scrape_interval_s": 0.1,
    "quiet_threshold_pct": 20,  # before each run, wait until the machine's CPU use is at most
    "quiet_wait_s": 3,  # this, but no longer than this
    "seed_users": 100,
    "seed_items_per_user": 10,
}
# Backends flush pg_stat_database counters within about a second of going idle.
STATS_SETTLE_SECONDS = 1.2
# Set by some configurations only; inherited, they would skew the others.
_PER_CONFIG_ENV = ("SERVICE_METRICS_DIR_MASTER_PID", "APP_MODULE", "METRICS_ENABLED", "ACCESS_LOG")


def say(message: str) -> None:
    """One progress line on stderr, stamped with the time since the harness started."""
    minutes, seconds = divmod(int(time.monotonic() - _STARTED), 60)
    print(f"[bench {minutes:02d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Workload:
    title: str
    script: str = "read.lua"
    path: str = "/"
    connections: int | None = None  # None: the run's --connections
    signups: int = 0  # sign-up clients beside the reads (a second wrk)


WORKLOADS = {
    "read": Workload("one-row read GET /items/{pubid}"),
    "steady": Workload("steady one-row reads from a cold start (pool fill included)"),
    "user": Workload("unauthenticated one-row read GET /users/{pubid}", "user.lua"),
    "insert": Workload("insert POST /items", "insert.lua"),
    "list": Workload("list GET /users?limit=50", "list.lua", "/users?limit=50"),
    "signup": Workload(
        "one-row reads during a sign-up storm (bcrypt 12)", signups=SETTINGS["signup_connections"]
    ),
    "scrape": Workload("one-row reads while /metrics is scraped"),
    # Issue 13's acceptance load: 48 sign-up clients against 4 workers.
    "flood": Workload("one-row reads during a 48-client sign-up flood (bcrypt 12)", signups=48),
    "c10": Workload("one-row reads, 10 connections", connections=10),
    "c200": Workload("one-row reads, 200 connections", connections=200),
    "c1000": Workload("one-row reads, 1000 connections", connections=1000),
}


@dataclass
class Database:
    url: str
    # Where session counts are read from: another database, so reading them opens no
    # session in the one being measured.
    monitor_url: str
    postmaster_pid: int | None  # the embedded server's (its CPU is measured)

    def sessions(self) -> int | None:
        """pg_stat_database.sessions (PostgreSQL 14+): sessions ever opened to this database."""
        query = "SELECT sessions FROM pg_stat_database WHERE datname = $1"
        try:
            value = fetch_value(self.monitor_url, query, make_url(self.url).database)
        except (OSError, asyncpg.PostgresError) as exc:
            say(f"could not read pg_stat_database: {exc!r}")
            return None
        return None if value is None else int(str(value))


def write_lua_data(users: list[SeededUser], path: Path) -> None:
    """The seed as a Lua table, which the wrk scripts load with dofile() (JSON's quoting is
    Lua's for these ASCII ids and tokens)."""
    quoted = json.dumps
    lines = [
        f"  {{pubid = {quoted(u.pubid)}, token = {quoted(u.token)}, "
        f"items = {{{', '.join(quoted(item) for item in u.items)}}}}},"
        for u in users
    ]
    path.write_text("\n".join(["return {", *lines, "}"]) + "\n")


class Scraper(threading.Thread):
    """Prometheus-like: GET /metrics on a fresh connection at a fixed interval, recording
    each scrape's latency (None: failed)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="metrics-scraper", daemon=True)
        self.port = port
        self.latencies_ms: list[float | None] = []
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.is_set():
            started, status, body = time.perf_counter(), 0, b""
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body = servers.http_get(self.port, "/metrics")
            ok = status == 200 and body
            self.latencies_ms.append(1000 * (time.perf_counter() - started) if ok else None)
            self.stopped.wait(SETTINGS["scrape_interval_s"])

    def finish(self) -> dict[str, float]:
        self.stopped.set()
        self.join(timeout=6)
        ordered = sorted(ms for ms in self.latencies_ms if ms is not None) or [0.0]
        return {
            "scrape_count": float(len(self.latencies_ms) - self.latencies_ms.count(None)),
            "scrape_failures": float(self.latencies_ms.count(None)),
            "scrape_p50_ms": statistics.median_low(ordered),
            "scrape_p99_ms": ordered[-(-99 * len(ordered) // 100) - 1],  # nearest rank
            "scrape_max_ms": ordered[-1],
        }


class Harness:
    def __init__(self, args: argparse.Namespace, database: Database, work_dir: Path) -> None:
        self.args = args
        self.database = database
        self.work_dir = work_dir
        self.samples: list[dict[str, Any]] = []
        self.server_samples: list[dict[str, Any]] = []
        self.failures: list[str] = []
        env = {k: v for k, v in os.environ.items() if k not in _PER_CONFIG_ENV}
        self.env = {**env, "DATABASE_URL": database.url, "JWT_SECRET_KEY": JWT_SECRET}
        self.data_file = work_dir / "seed.lua"
        self.configs = [CONFIGS[key] for key in args.configs] + [
            servers.candidate(spec) for spec in args.candidate
        ]

    def seed(self) -> None:
        seed_env = {**self.env, "BCRYPT_ROUNDS": "4", "ACCESS_TOKEN_TTL_SECONDS": "86400"}
        server = servers.start_server(CONFIGS[servers.BASELINE], seed_env, self.work_dir, "seed")
        users, items = SETTINGS["seed_users"], SETTINGS["seed_items_per_user"]
        try:
            server.wait_first_200()
            seeded = seed(server.url, users=users, items=items, login=True, prefix="b")
        finally:
            server.stop()
        if problems := [problem for problem in seeded if isinstance(problem, str)]:
            raise RuntimeError(f"seeding failed: {problems[0]}")
        write_lua_data([user for user in seeded if isinstance(user, SeededUser)], self.data_file)
        execute(self.database.url, "ANALYZE")
        say(f"seeded {len(seeded)} users x {items} items through the API")

    def warm_up(self, server: RunningServer, seconds: float) -> None:
        data, connections = str(self.data_file), self.args.connections
        Wrk(server.url, "read.lua", data, connections=connections, seconds=seconds).finish()

    def run_config(self, config: ServerConfig, round_number: int, attempt: int) -> None:
        """Start the server, run its workloads, stop it. The samples count only if the server
        is still alive at the end (on this shared machine someone else may kill it)."""
        workloads = [w for w in config.workloads if w in self.args.workloads]
        if not workloads:
            return
        server = servers.start_server(config, self.env, self.work_dir, f"r{round_number}a{attempt}")
        samples = []
        try:
            startup = server.wait_first_200()
            say(f"round {round_number} {config.key}: first 200 after {startup:.2f} s")
            if workloads[0] != "steady":
                self.warm_up(server, SETTINGS["warmup_s"])
            for key in workloads:
                try:
                    samples.append(self.measure(server, key, round_number))
                except WrkError as exc:
                    self.failures.append(f"round {round_number} {config.key} {key}: {exc}")
                    say(f"FAILED {config.key} {key}: {exc}")
                if server.process.poll() is not None:
                    raise ServerFailedError(
                        f"{config.key} died during {key} (exit {server.process.returncode}); "
                        f"log: {server.log_path}"
                    )
            rss = [mb for pid in server.worker_pids() if (mb := rss_mb(pid)) is not None]
            self.samples.extend(samples)
            self.server_samples.append(
                {
                    "config": config.key,
                    "round": round_number,
                    "workers": config.workers,
                    "start_to_first_200_s": startup,
                    "worker_rss_mb": rss,
                }
            )
            sizes = ", ".join(f"{mb:.0f}" for mb in rss)
            say(f"round {round_number} {config.key}: worker RSS {sizes} MB")
        finally:
            server.stop()
            if server.process.returncode not in (0, -15):
                say(f"note: {config.key} exited with {server.process.returncode}")

    def measure(self, server: RunningServer, key: str, round_number: int) -> dict[str, Any]:
        workload, args = WORKLOADS[key], self.args
        url, data = server.url, str(self.data_file)
        seconds = SETTINGS["steady_duration_s"] if key == "steady" else args.duration
        waited, background = wait_for_quiet(
            SETTINGS["quiet_threshold_pct"], SETTINGS["quiet_wait_s"]
        )
        extra: dict[str, float] = {"quiet_wait_s": waited, "background_cpu_pct": background}
        sessions_before = self.database.sessions()
        meter = CpuMeter(server.process.pid, self.database.postmaster_pid)
        side_load = scraper = None
        if clients := workload.signups:
            prefix = f"{key[0]}{round_number}{server.config.key.replace('-', '')[:11]}"
            side_load = Wrk(
                url, "signup.lua", prefix, connections=clients, seconds=seconds, timeout=10
            )
        elif key == "scrape":
            scraper = Scraper(server.port)
        connections = workload.connections or args.connections
        main = Wrk(
            url + workload.path, workload.script, data, connections=connections, seconds=seconds
        )
        result = main.finish()
        wrk_cpu_s = result["cpu_s"]
        if side_load is not None:
            side = side_load.finish()
            wrk_cpu_s += side["cpu_s"]
            extra |= {f"{key}_{name}": side[name] for name in ("rps", "p50_ms", "p99_ms", "max_ms")}
            extra[f"{key}_errors"] = float(side["errors"] + side["timeouts"])
            extra[f"{key}_wrk_cpu_pct"] = side["cpu_pct"]
        if scraper is not None:
            extra |= scraper.finish()
        cpu, server_s = meter.stop(wrk_cpu_s)
        time.sleep(STATS_SETTLE_SECONDS)
        before, after, requests = sessions_before, self.database.sessions(), result["requests"]
        sample: dict[str, Any] = {
            "config": server.config.key,
            "workload": key,
            "round": round_number,
        }
        sample |= {name: value for name, value in result.items() if not name.startswith("cpu_")}
        sample["new_pg_sessions"] = None if before is None or after is None else after - before
        sample |= {"wrk_cpu_pct": result["cpu_pct"], **cpu}
        sample["server_cpu_ms_per_request"] = 1000 * server_s / requests if requests else 0.0
        sample["extra"] = extra
        self.report(sample)
        return sample

    @staticmethod
    def report(s: dict[str, Any]) -> None:
        extra = s["extra"]
        note = ""
        if "signup_rps" in extra:
            note = f", sign-ups {extra['signup_rps']:.1f}/s"
        if "scrape_p99_ms" in extra:
            note = f", scrape p99 {extra['scrape_p99_ms']:.1f} ms"
        say(
            f"round {s['round']} {s['config']:<18} {s['workload']:<7} {s['rps']:7.0f} req/s "
            f"p50 {s['p50_ms']:6.1f} ms p99 {s['p99_ms']:6.1f} ms err {s['errors']} "
            f"to {s['timeouts']} pg+{s['new_pg_sessions']} wrk {s['wrk_cpu_pct']:.0f}% "
            f"cpu {s['system_cpu_pct']:.0f}% (server {s['server_cpu_pct']:.0f}%, "
            f"{s['server_cpu_ms_per_request']:.2f} ms/req; others {s['foreign_cpu_pct']:.0f}%)"
            f"{note}"
        )

    def run(self) -> None:
        configs = self.configs
        for round_number in range(1, self.args.rounds + 1):
            shift = (round_number - 1) % len(configs)
            for config in configs[shift:] + configs[:shift]:
                for attempt in (1, 2):
                    try:
                        self.run_config(config, round_number, attempt)
                        break
                    except ServerFailedError as exc:
                        self.failures.append(f"round {round_number} {config.key}: {exc}")
                        say(f"FAILED {config.key} (attempt {attempt} of 2): {exc}")
