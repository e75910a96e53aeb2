"""The run itself: seed once, then every configuration in every round, interleaved."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.common import say
from benchmarks.configs import BASELINE, CONFIGS, ServerConfig, candidate
from benchmarks.database import BenchDatabase
from benchmarks.results import ServerSample
from benchmarks.seed import seed, write_lua_data
from benchmarks.servers import RunningServer, ServerFailedError, start_server
from benchmarks.workloads import WORKLOADS, Options, Sample, run_workload, warm_up
from benchmarks.wrk import WrkError

JWT_SECRET = "benchmark-only-jwt-secret-not-for-production-0123456789"
# Variables the harness sets per server; inherited values would skew a configuration.
_PER_SERVER_ENV = (
    "BIND",
    "WEB_CONCURRENCY",
    "PROMETHEUS_MULTIPROC_DIR",
    "SERVICE_METRICS_DIR_MASTER_PID",
    "APP_MODULE",
    "FLOOR_MODE",
    "METRICS_ENABLED",
    "ACCESS_LOG",
)


class Harness:
    def __init__(self, args: argparse.Namespace, database: BenchDatabase, work_dir: Path) -> None:
        self.args = args
        self.database = database
        self.work_dir = work_dir
        self.samples: list[Sample] = []
        self.server_samples: list[ServerSample] = []
        self.failures: list[str] = []
        env = {k: v for k, v in os.environ.items() if k not in _PER_SERVER_ENV}
        self.env = {**env, "DATABASE_URL": database.url, "JWT_SECRET_KEY": JWT_SECRET}
        self.options = Options(
            duration_s=args.duration,
            steady_duration_s=args.steady_duration,
            connections=args.connections,
            signup_connections=args.signup_connections,
            scrape_interval_s=args.scrape_interval,
            quiet_threshold_pct=args.quiet_threshold,
            quiet_wait_s=args.quiet_wait,
        )
        self.data_file = work_dir / "seed.lua"
        self.configs = [CONFIGS[key] for key in args.configs]
        for spec in args.candidate:
            name, _, tree = spec.partition("=")
            self.configs.append(candidate(name, Path(tree)))

    def seed(self) -> None:
        server = start_server(
            CONFIGS[BASELINE],
            {**self.env, "BCRYPT_ROUNDS": "4", "ACCESS_TOKEN_TTL_SECONDS": "86400"},
            self.work_dir,
            "seed",
        )
        try:
            server.wait_first_200()
            users = seed(
                server.url, users=self.args.seed_users, items_per_user=self.args.seed_items
            )
        finally:
            server.stop()
        write_lua_data(users, self.data_file)
        self.database.analyze()
        say(f"seeded {len(users)} users x {self.args.seed_items} items through the API")

    def run_config(self, config: ServerConfig, round_number: int, attempt: int) -> None:
        """Start the server, run its workloads, stop it. The samples count only if the server
        is still alive at the end (on this shared machine someone else may kill it)."""
        workloads = [w for w in config.workloads if w in self.args.workloads]
        if not workloads:
            return
        tag = f"r{round_number}a{attempt}"
        server = start_server(config, self.env, self.work_dir, tag)
        samples: list[Sample] = []
        try:
            startup = server.wait_first_200()
            say(f"round {round_number} {config.key}: first 200 after {startup:.2f} s")
            if workloads[0] != "steady":
                warm_up(
                    server,
                    data_file=self.data_file,
                    connections=self.args.connections,
                    seconds=self.args.warmup,
                )
            for key in workloads:
                sample = self._run_one(server, key, round_number)
                if server.process.poll() is not None:
                    raise ServerFailedError(
                        f"{config.key} died during {key} (exit {server.process.returncode}); "
                        f"log: {server.log_path}"
                    )
                if sample is not None:
                    samples.append(sample)
            rss = server.worker_rss_mb()
            self.samples.extend(samples)
            self.server_samples.append(
                ServerSample(config.key, round_number, config.workers, startup, rss)
            )
            sizes = ", ".join(f"{mb:.0f}" for mb in rss)
            say(f"round {round_number} {config.key}: worker RSS {sizes} MB")
        finally:
            server.stop()
            if server.process.returncode not in (0, -15):
                say(f"note: {config.key} exited with {server.process.returncode}")

    def _run_one(self, server: RunningServer, key: str, round_number: int) -> Sample | None:
        try:
            sample = run_workload(
                server,
                WORKLOADS[key],
                round_number=round_number,
                database=self.database,
                data_file=self.data_file,
                options=self.options,
            )
        except WrkError as exc:
            self.failures.append(f"round {round_number} {server.config.key} {key}: {exc}")
            say(f"FAILED {server.config.key} {key}: {exc}")
            return None
        extra = ""
        if "signup_rps" in sample.extra:
            extra = f", sign-ups {sample.extra['signup_rps']:.1f}/s"
        if "scrape_p99_ms" in sample.extra:
            extra = f", scrape p99 {sample.extra['scrape_p99_ms']:.1f} ms"
        say(
            f"round {round_number} {server.config.key:<18} {key:<7} {sample.rps:7.0f} req/s "
            f"p50 {sample.p50_ms:6.1f} ms p99 {sample.p99_ms:6.1f} ms err {sample.errors} "
            f"to {sample.timeouts} pg+{sample.new_pg_sessions} wrk {sample.wrk_cpu_pct:.0f}% "
            f"cpu {sample.system_cpu_pct:.0f}% (server {sample.server_cpu_pct:.0f}%, "
            f"{sample.server_cpu_ms_per_request:.2f} ms/req; others {sample.foreign_cpu_pct:.0f}%)"
            f"{extra}"
        )
        return sample

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
