"""What the numbers were measured on, and how busy the machine was during each run."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

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


def _first_match(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "unknown"


def describe(*, wrk_version: str, postgres_version: str) -> dict[str, str]:
    memory_kb = _first_match("/proc/meminfo", "MemTotal")
    os_name = _first_match("/etc/os-release", "PRETTY_NAME=").strip('"')
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": _first_match("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "memory": memory_kb,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "wrk": wrk_version,
        "packages": ", ".join(f"{name} {version}" for name, version in versions.items()),
    }


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each live process in the trees under `roots`."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    wanted = set(roots)
    changed = True
    while changed:
        found = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        wanted |= found
        changed = bool(found)
    return {pid: seconds[pid] for pid in wanted if pid in seconds}


def cpu_used_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two snapshots; a process that appeared counts in full
    (processes that ended in between are not seen)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


@dataclass(frozen=True, slots=True)
class CpuTimes:
    busy: int
    steal: int
    total: int

    @classmethod
    def now(cls) -> CpuTimes:
        # cpu  user nice system idle iowait irq softirq steal guest guest_nice
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        steal = fields[7] if len(fields) > 7 else 0
        total = sum(fields[:8])
        return cls(busy=total - idle - steal, steal=steal, total=total)

    def busy_seconds_since(self, earlier: CpuTimes) -> float:
        """CPU seconds used by everything on the machine, summed over cores."""
        return (self.busy - earlier.busy) / _TICKS

    def usage_since(self, earlier: CpuTimes) -> tuple[float, float]:
        """(busy %, steal %) of all cores between `earlier` and this sample."""
        total = self.total - earlier.total
        if total <= 0:
            return 0.0, 0.0
        return (
            100 * (self.busy - earlier.busy) / total,
            100 * (self.steal - earlier.steal) / total,
        )


def wait_for_quiet(*, threshold_pct: float, max_wait_s: float) -> tuple[float, float]:
    """Before a run, while our own server idles: wait (bounded) until the machine's CPU use
    drops to `threshold_pct`. Returns (seconds waited, last busy %)."""
    started = time.monotonic()
    while True:
        before = CpuTimes.now()
        time.sleep(0.5)
        busy, _ = CpuTimes.now().usage_since(before)
        waited = time.monotonic() - started
        if busy <= threshold_pct or waited >= max_wait_s:
            return waited, busy
