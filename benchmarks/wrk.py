"""Run wrk with one of the Lua scripts in benchmarks/lua and read back its JSON summary,
plus the CPU time wrk itself used (from the kernel's rusage for that process)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from benchmarks.common import LUA_DIR

MARKER = "BENCH_JSON "
_GRACE_SECONDS = 30.0


class WrkError(RuntimeError):
    pass


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(
            "wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk"
        )
    return path


def wrk_version() -> str:
    result = subprocess.run(
        [wrk_binary(), "--version"], capture_output=True, text=True, check=False
    )
    return (result.stdout or result.stderr).splitlines()[0].strip()


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # connect + read + write errors and HTTP statuses >= 400
    non_2xx: int
    timeouts: int
    cpu_s: float
    cpu_pct: float  # of one core, over the run's wall time


class WrkProcess:
    """One wrk run in the background; `finish()` waits (bounded) and parses the result."""

    def __init__(
        self,
        url: str,
        script: str,
        *,
        connections: int,
        duration_s: float,
        script_args: list[str],
        timeout_s: float = 2.0,
        threads: int = 1,
    ) -> None:
        self.duration_s = duration_s
        self._output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in finish)
        command = [
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            script,
            url,
            "--",
            *script_args,
        ]
        self._started = time.monotonic()
        # cwd: the scripts `require` their shared reporter relative to it.
        self._process = subprocess.Popen(
            command, cwd=LUA_DIR, stdout=self._output, stderr=subprocess.STDOUT
        )

    def finish(self) -> WrkResult:
        deadline = self._started + self.duration_s + _GRACE_SECONDS
        pid = self._process.pid
        while True:
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            if waited == pid:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                waited, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.05)
        wall = time.monotonic() - self._started
        self._process.returncode = os.waitstatus_to_exitcode(status)
        self._output.seek(0)
        text = self._output.read()
        self._output.close()
        summary = next(
            (line[len(MARKER) :] for line in text.splitlines() if line.startswith(MARKER)), None
        )
        if summary is None:
            raise WrkError(f"wrk gave no summary (exit {self._process.returncode}):\n{text}")
        data = json.loads(summary)
        cpu = usage.ru_utime + usage.ru_stime
        duration = data["duration_us"] / 1e6
        return WrkResult(
            requests=data["requests"],
            duration_s=duration,
            rps=data["requests"] / duration if duration else 0.0,
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            errors=data["connect"] + data["read"] + data["write"] + data["status"],
            non_2xx=data["status"],
            timeouts=data["timeout"],
            cpu_s=cpu,
            cpu_pct=100 * cpu / wall if wall else 0.0,
        )
