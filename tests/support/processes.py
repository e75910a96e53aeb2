"""Real gunicorn processes on loopback, started the way users start them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tooling.postgres import free_port
from tooling.processes import children_of, children_with_state

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


def _timed_out(timeout: float, what: str, seen: Callable[[], object] | None) -> TimeoutError:
    message = f"timed out after {timeout}s waiting for {what}"
    if seen is not None:
        message += f"; last saw: {seen()}"
    return TimeoutError(message)


def wait_for(
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str,
    seen: Callable[[], object] | None = None,
) -> None:
    """Poll `predicate` until true; on timeout say what was awaited and, with `seen`, what
    the last look found."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise _timed_out(timeout, what, seen)


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

    def process_table(self) -> str:
        """For failure messages: the master's state and each child's, and which booted."""
        code = self.process.poll()
        master = "up" if code is None else f"exited {code}"
        own, booted = _cmdline(self.pid), self.booted_pids()
        children = [
            f"{pid}:{state}"
            + ("" if _cmdline(pid) == own else ":other")
            + (":booted" if pid in booted else "")
            for pid, state in children_with_state(self.pid).items()
        ]
        return f"master {self.pid} {master}; children {children or 'none'}"

    def booted_pids(self) -> set[int]:
        """Every pid that ever logged a finished application startup (dead ones too)."""
        return {int(pid) for pid in _STARTUP_COMPLETE.findall(self.log())}

    def booted_workers(self) -> list[int]:
        """Live workers that finished booting (a booting one accepts no connection yet)."""
        booted = self.booted_pids()
        return [pid for pid in self.worker_pids() if pid in booted]

    def wait_booted(self, workers: int, *, timeout: float = 60) -> list[int]:
        def ready() -> bool:
            live = self.worker_pids()
            return len(live) == workers and len(self.booted_workers()) == workers

        try:
            wait_for(
                ready, timeout=timeout, what=f"{workers} booted workers", seen=self.process_table
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\ngunicorn's log:\n{self.log()[-4000:]}") from None
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


@contextmanager
def paused(pids: Iterable[int]) -> Iterator[None]:
    """SIGSTOP these processes for the block. A paused worker accepts no connection, so the
    kernel must hand new ones to the workers left running: which worker serves a connection
    then no longer depends on who wins the accept race on a busy machine."""
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def served_by(server: Gunicorn, worker: int) -> bool:
    """Whether `worker` accepts and answers a fresh connection while the others are paused."""
    others = [pid for pid in server.worker_pids() if pid != worker]
    with paused(others):
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.get("/livez", headers={"Connection": "close"})
    return response.headers["x-worker-id"] == str(worker)


async def one_response_from_each_worker(
    server: Gunicorn, send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
) -> dict[int, httpx.Response]:
    """Send on fresh connections until every worker has answered one, pausing (SIGSTOP)
    each worker once it has answered, so the next connection must go to another.

    Which idle worker accepts a connection from the shared listening socket is up to the
    kernel's wakeups and the scheduler: on a busy machine one worker may lose that race
    hundreds of times in a row. Pausing the winners makes the check deterministic: it
    proves every worker accepts and serves, whatever the load."""
    workers = server.worker_pids()
    answered: dict[int, httpx.Response] = {}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            while len(answered) < len(workers):
                try:
                    response = await send(http)
                except httpx.TimeoutException:
                    raise AssertionError(
                        f"no answer within 30 s with workers {sorted(answered)} paused; "
                        f"{server.process_table()}"
                    ) from None
                worker = int(response.headers["x-worker-id"])
                assert worker in workers, (worker, server.process_table())
                assert worker not in answered, f"paused worker {worker} answered again"
                answered[worker] = response
                os.kill(worker, signal.SIGSTOP)
    finally:
        for worker in answered:
            os.kill(worker, signal.SIGCONT)
    return answered


def get(server: Gunicorn, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(server.url + path, timeout=5, **kwargs)  # type: ignore[arg-type]


async def eventually(
    predicate: Callable[[], object],
    *,
    within: float,
    what: str,
    seen: Callable[[], object] | None = None,
) -> None:
    """Like wait_for, but yields to the event loop (load keeps running meanwhile)."""
    import asyncio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise _timed_out(within, what, seen)
