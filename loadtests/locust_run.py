"""Run Locust headless as subprocesses (it uses gevent: never import it here): one local
process, or a master and N workers on loopback; read back its CSV statistics."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tooling.postgres import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = "loadtests/locustfile.py"
CLASS_NAMES = {
    "browse": ["Browser"],
    "write": ["Writer"],
    "signup": ["SignupStorm"],
    "contention": ["Contention"],
    "polling": ["PollCreator", "Poller"],
    "abuse": ["LoginAbuse"],
}


@dataclass(frozen=True)
class LocustPlan:
    host: str
    users: int
    spawn_rate: float
    run_seconds: int
    out_dir: Path
    mix: str = ""
    distributed_workers: int = 0
    stop_timeout: int = 20
    gate_args: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    @property
    def gates_file(self) -> Path:
        return self.out_dir / "gates.json"

    @property
    def ledger_dir(self) -> Path:
        return self.out_dir / "ledger"

    def common_args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "locust",
            "-f",
            LOCUSTFILE,
            "-H",
            self.host,
            "--ledger-dir",
            str(self.ledger_dir),
            *self.extra_args,
        ]

    def lead_args(self) -> list[str]:
        """The process that owns the run: the local one, or the master."""
        args = [
            *self.common_args(),
            "--headless",
            "--only-summary",
            "-u",
            str(self.users),
            "-r",
            str(self.spawn_rate),
            "-t",
            f"{self.run_seconds}s",
            "--stop-timeout",
            str(self.stop_timeout),
            "--csv",
            str(self.csv_prefix),
            "--html",
            str(self.out_dir / "locust.html"),
            "--gates-file",
            str(self.gates_file),
            *self.gate_args,
        ]
        if self.mix:
            args += ["--mix", self.mix]
        return args


@dataclass
class LocustRun:
    plan: LocustPlan
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        plan = self.plan
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        if plan.distributed_workers <= 0:
            self._spawn(plan.lead_args(), "locust")
            return
        port = free_port()
        self._spawn(
            [
                *plan.lead_args(),
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                str(plan.distributed_workers),
                "--expect-workers-max-wait",
                "60",
            ],
            "locust-master",
        )
        for index in range(plan.distributed_workers):
            self._spawn(
                [*plan.common_args(), "--worker", "--master-host", "127.0.0.1",
                 "--master-port", str(port)],
                f"locust-worker-{index + 1}",
            )  # fmt: skip

    def _spawn(self, args: list[str], name: str) -> None:
        log = self.plan.out_dir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                args, cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        self.logs.append(log)

    @property
    def lead(self) -> subprocess.Popen[bytes]:
        return self.processes[0]

    def running(self) -> bool:
        return self.lead.poll() is None

    def wait(self, timeout: float) -> list[int]:
        """Exit codes, lead first. Whatever is still running at the deadline is stopped
        (SIGTERM, then SIGKILL) and reported as -1."""
        deadline = time.monotonic() + timeout
        codes: list[int] = []
        for process in self.processes:
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(-1)
        self.stop()
        return codes

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def read_request_counts(stats_csv: Path) -> tuple[Counter[tuple[str, str]], int]:
    """Locust's final request count per (method, name), and its failure count."""
    counts: Counter[tuple[str, str]] = Counter()
    failures = 0
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                failures = int(row["Failure Count"])
                continue
            counts[row["Type"], row["Name"]] += int(row["Request Count"])
    return counts, failures
