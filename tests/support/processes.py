"""Real gunicorn processes for tests (tooling.gunicorn, with the test settings below), and
helpers that steer connections to chosen workers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from tooling import gunicorn
from tooling.gunicorn import Gunicorn, timed_out

TEST_FAILURES_PER_ADDRESS = 1_000_000
TEST_HASH_QUEUE_TIMEOUT_SECONDS = 15.0
TEST_ENV = {
    "BCRYPT_ROUNDS": "4",
    "ENVIRONMENT": "test",
    # Every test client shares loopback, and a test session shares one database: the
    # per-address login limit would be a limit on the whole suite. Tests of that limit
    # set it back (tests/e2e/test_throttle_processes.py).
    "LOGIN_FAILURES_PER_ADDRESS": str(TEST_FAILURES_PER_ADDRESS),
    # Bursts of concurrent sign-ups (50 at once in the name race) must not be shed on a
    # busy machine: admission control is tested at its defaults on its own
    # (tests/e2e/test_hash_admission.py, tests/unit/test_security.py).
    "HASH_QUEUE_TIMEOUT_SECONDS": str(TEST_HASH_QUEUE_TIMEOUT_SECONDS),
}


def gunicorn_env(
    database_url: str, port: int, metrics_dir: Path, **overrides: str
) -> dict[str, str]:
    return gunicorn.gunicorn_env(database_url, port, metrics_dir, **{**TEST_ENV, **overrides})


def run_gunicorn(
    database_url: str, *, env: Mapping[str, str] | None = None, **options: Any
) -> AbstractContextManager[Gunicorn]:
    """tooling.gunicorn.run_gunicorn with the test settings (TEST_ENV) under `env`."""
    return gunicorn.run_gunicorn(database_url, env={**TEST_ENV, **(env or {})}, **options)


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
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise timed_out(within, what, seen)
