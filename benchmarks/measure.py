"""The measuring instruments: wrk (one of the Lua scripts in benchmarks/lua, its JSON summary
and its own CPU time), the machine's and process trees' CPU time, and what the numbers
were measured on."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).resolve().parent / "lua"
MARKER = "BENCH_JSON "
PACKAGES = (
    "gunicorn",
    "uvicorn",
    "uvicorn-worker",
    "uvloop",
    "httptools",
    "fastapi",
    "starlette",
    "pydantic",
    "sqlalchemy",
    "asyncpg",
    "prometheus-client",
    "bcrypt",
)
_TICKS = os.sysconf("SC_CLK_TCK")


class WrkError(RuntimeError):
    pass


def wrk_version() -> str:
    """wrk's version line; without wrk nothing can be measured: exit with how to install it."""
    if (path := shutil.which("wrk")) is None:
        raise SystemExit(
            "wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk"
        )
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0].strip()


class Wrk:
    """One `wrk -t1` run in the background; `finish()` waits (bounded) and returns its summary
    (requests, rps, p50/p90/p99/max_ms, errors, non_2xx, timeouts, cpu_s, cpu_pct)."""

    def __init__(
        self, url: str, script: str, *args: str, connections: int, seconds: float, timeout: int = 2
    ) -> None:
        self.seconds = seconds
        command = [
            *("wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"),
            *(f"--timeout={timeout}s", "-s", script, url, "--", *args),
        ]
        self._started = time.monotonic()
        # cwd: the scripts `require` their shared reporter relative to it.
        # Its output is a few lines: the pipe cannot fill up before it exits.
        self._process = subprocess.Popen(
            command, cwd=LUA_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(self) -> dict[str, Any]:
        deadline = self._started + self.seconds + 30
        pid = self._process.pid
        # wait4, not wait: the kernel's rusage of this one process is wrk's own CPU time.
        while (waited := os.wait4(pid, os.WNOHANG))[0] != pid:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                waited = os.wait4(pid, 0)
                break
            time.sleep(0.05)
        _, status, usage = waited
        wall = time.monotonic() - self._started
        self._process.returncode = os.waitstatus_to_exitcode(status)
        assert self._process.stdout is not None
        text = self._process.stdout.read()
        self._process.stdout.close()
        found = [line[len(MARKER) :] for line in text.splitlines() if line.startswith(MARKER)]
        if not found:
            raise WrkError(f"wrk gave no summary (exit {self._process.returncode}):\n{text}")
        data = json.loads(found[0])
        cpu = usage.ru_utime + usage.ru_stime
        duration = data["duration_us"] / 1e6
        return {
            "requests": data["requests"],
            "rps": data["requests"] / duration if duration else 0.0,
            **{f"{p}_ms": data[f"{p}_us"] / 1000 for p in ("p50", "p90", "p99", "max")},
            "errors": data["connect"] + data["read"] + data["write"] + data["status"],
            "non_2xx": data["status"],
            "timeouts": data["timeout"],
            "cpu_s": cpu,
            "cpu_pct": 100 * cpu / wall if wall else 0.0,
        }


def _machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) CPU ticks of the whole machine, summed over cores."""
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total - fields[3] - fields[4] - fields[7], fields[7], total


class CpuMeter:
    """CPU used from its creation to `stop()`: by the whole machine, and by the process trees
    under the server's and (embedded) PostgreSQL's main processes."""

    def __init__(self, server_pid: int, postgres_pid: int | None) -> None:
        self.roots = (server_pid, postgres_pid)
        self.trees = self._trees()
        self.harness = time.process_time()
        self.started = time.monotonic()
        self.ticks = _machine_ticks()

    def _trees(self) -> list[dict[int, float]]:
        """CPU seconds of each live process under each root, from one pass over /proc (a pass
        per process would take as long as a short run's CPU)."""
        parents: dict[int, int] = {}
        seconds: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                    seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
        trees = []
        for root in self.roots:
            tree = {root} if root else set()
            while found := {pid for pid, parent in parents.items() if parent in tree} - tree:
                tree |= found
            trees.append({pid: seconds[pid] for pid in tree if pid in seconds})
        return trees

    def stop(self, wrk_cpu_s: float) -> tuple[dict[str, float | None], float]:
        """Percentages of all cores (100 % = every core busy): the machine, its steal time, the
        server, PostgreSQL (None unless embedded), and everything else ("foreign": others on
        this machine); and the server's CPU seconds. A process that appeared during the run
        counts in full; one that ended is not seen."""
        busy, steal, total = (
            after - before for after, before in zip(_machine_ticks(), self.ticks, strict=True)
        )
        capacity = (time.monotonic() - self.started) * (os.cpu_count() or 1) / 100  # s per %
        server_s, pg_s = (
            sum(value - before.get(pid, 0.0) for pid, value in after.items())
            for before, after in zip(self.trees, self._trees(), strict=True)
        )
        own_s = server_s + pg_s + wrk_cpu_s + time.process_time() - self.harness
        return {
            "system_cpu_pct": 100 * busy / max(1, total),
            "steal_pct": 100 * steal / max(1, total),
            "server_cpu_pct": server_s / capacity,
            "pg_cpu_pct": pg_s / capacity if self.roots[1] else None,
            "foreign_cpu_pct": max(0.0, busy / _TICKS - own_s) / capacity,
        }, server_s


def wait_for_quiet(threshold_pct: float, max_wait_s: float) -> tuple[float, float]:
    """Before a run, while our own server idles: wait (bounded) until the machine's CPU use
    drops to `threshold_pct`. Returns (seconds waited, last busy %)."""
    started = time.monotonic()
    while True:
        before = _machine_ticks()
        time.sleep(0.5)
        busy, _, total = (a - b for a, b in zip(_machine_ticks(), before, strict=True))
        waited = time.monotonic() - started
        if 100 * busy / max(1, total) <= threshold_pct or waited >= max_wait_s:
            return waited, 100 * busy / max(1, total)


def _first_match(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(*, wrk_version: str, postgres_version: str) -> dict[str, str]:
    return {
        "cpu": _first_match("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "memory": _first_match("/proc/meminfo", "MemTotal"),
        "os": _first_match("/etc/os-release", "PRETTY_NAME=").strip('"'),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "wrk": wrk_version,
        "packages": ", ".join(f"{name} {_version(name)}" for name in PACKAGES),
    }
