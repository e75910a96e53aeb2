"""Real gunicorn processes on loopback, started the way users start them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.dev.postgres import free_port
from service.dev.processes import children_of

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
TEST_FAILURES_PER_ADDRESS = 1_000_000
TEST_HASH_QUEUE_TIMEOUT_SECONDS = 15.0
_STARTUP_COMPLETE = re.compile(r"\[(\d+)\] \[INFO\] uvicorn\.error: Application startup complete")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_for(predicate: object, *, timeout: float, interval: float = 0.05, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    metrics_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Workers are forks of the master: same command line (unlike helper processes)."""
        own = _cmdline(self.pid)
        return [pid for pid in children_of(self.pid) if _cmdline(pid) == own]

    def booted_pids(self) -> set[int]:
        return {int(pid) for pid in _STARTUP_COMPLETE.findall(self.log())}

    def wait_booted(self, workers: int, *, timeout: float = 30) -> list[int]:
        def ready() -> bool:
            live = set(self.worker_pids())
            return len(live) == workers and live <= self.booted_pids()

        try:
            wait_for(ready, timeout=timeout, what=f"{workers} booted workers")
        except TimeoutError:
            raise TimeoutError(f"gunicorn did not boot {workers} workers:\n{self.log()}") from None
        return self.worker_pids()

    def send(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def stop(self, *, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def gunicorn_env(
    database_url: str, port: int, metrics_dir: Path, **overrides: str
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PROMETHEUS_", "SERVICE_", "WEB_CONCURRENCY", "DB_"))
    }
    env.update(
        DATABASE_URL=database_url,
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="4",
        BCRYPT_ROUNDS="4",
        ENVIRONMENT="test",
        LOG_LEVEL="info",
        ACCESS_LOG="false",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        # Every test client shares loopback, and a test session shares one database: the
        # per-address login limit would be a limit on the whole suite. Tests of that limit
        # set it back (tests/e2e/test_throttle_processes.py).
        LOGIN_FAILURES_PER_ADDRESS=str(TEST_FAILURES_PER_ADDRESS),
        # Bursts of concurrent sign-ups (50 at once in the name race) must not be shed on a
        # busy machine: admission control is tested at its defaults on its own
        # (tests/e2e/test_hash_admission.py, tests/unit/test_security.py).
        HASH_QUEUE_TIMEOUT_SECONDS=str(TEST_HASH_QUEUE_TIMEOUT_SECONDS),
    )
    env.update(overrides)
    return env


@contextmanager
def run_gunicorn(
    database_url: str,
    *,
    workers: int = 4,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[Gunicorn]:
    """Start `gunicorn -c gunicorn.conf.py` from the project root; stop it on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gunicorn-test-") as scratch:
        scratch_path = Path(scratch)
        metrics_dir = scratch_path / "metrics"
        log_path = scratch_path / "gunicorn.log"
        full_env = gunicorn_env(
            database_url, port, metrics_dir, WEB_CONCURRENCY=str(workers), **dict(env or {})
        )
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [GUNICORN, "-c", "gunicorn.conf.py", *args],
                cwd=PROJECT_ROOT,
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = Gunicorn(process, port, log_path, metrics_dir, full_env)
        try:
            if wait:
                server.wait_booted(workers)
            yield server
        finally:
            server.stop()


def get(server: Gunicorn, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(server.url + path, timeout=5, **kwargs)  # type: ignore[arg-type]


async def eventually(predicate: object, *, within: float, what: str) -> None:
    """Like wait_for, but yields to the event loop (load keeps running meanwhile)."""
    import asyncio

    assert callable(predicate)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {within}s waiting for {what}")
