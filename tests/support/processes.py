"""Real gunicorn processes under test: the settings tests start them with (TEST_ENV, for
tooling.gunicorn.run_gunicorn), steady background load, helpers that steer connections to
chosen workers, and a reader in a process of its own:

    python -m tests.support.processes URL SECONDS   # prints its latencies (ms) as JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field

import httpx

from tooling.gunicorn import Gunicorn

TEST_ENV = {
    "BCRYPT_ROUNDS": "4",
    "ENVIRONMENT": "test",
    # Every test client shares loopback, and a test session shares one database: the
    # per-address login limit would be a limit on the whole suite. Tests of that limit
    # set it back (tests/e2e/test_throttle_processes.py).
    "LOGIN_FAILURES_PER_ADDRESS": "1000000",
    # Bursts of concurrent sign-ups (50 at once in the name race) must not be shed on a
    # busy machine: admission control is tested at its defaults on its own
    # (tests/e2e/test_hash_admission.py, tests/unit/test_security.py).
    "HASH_QUEUE_TIMEOUT_SECONDS": "15",
}


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    workers: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status < 400)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(n for status, n in self.statuses.items() if status >= 500)


async def steady_load(
    base_url: str,
    stop: asyncio.Event,
    *,
    path: str = "/users?limit=5",
    clients: int = 8,
    retry_closed_keepalive: bool = True,
    result: LoadResult | None = None,
) -> LoadResult:
    """Each client sends GETs back to back (keep-alive, as real clients do) until `stop` is
    set or two minutes pass.

    A worker that shuts down closes its idle keep-alive connections, and a request sent on
    one at that instant meets a closed socket before any response byte. RFC 9112 section
    9.3.1 allows a client to retry an idempotent request then, and browsers, Go and OkHttp
    do; with `retry_closed_keepalive` this client does too (up to twice more, since the
    fresh connection may itself be accepted by a worker that is stopping).

    Pass `result` to watch progress while the load runs. The request timeout is generous:
    on a busy machine a request queued while replacement workers boot may wait seconds,
    and these tests count failures; latency belongs to the benchmarks."""
    result = result if result is not None else LoadResult()
    deadline = time.monotonic() + 120

    async def get(http: httpx.AsyncClient) -> httpx.Response | None:
        for _ in range(3 if retry_closed_keepalive else 1):
            try:
                return await http.get(path)
            except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                closed: Exception = exc
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                return None
        result.errors.append(f"{type(closed).__name__}: {closed}")
        return None

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                response = await get(http)
                if response is not None:
                    result.statuses[response.status_code] += 1
                    result.workers[response.headers.get("x-worker-id", "?")] += 1

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return result


@contextmanager
def paused(pids: Iterable[int]) -> Iterator[None]:
    """SIGSTOP these processes for the block (a paused worker accepts no connection; a
    paused PostgreSQL hangs rather than refuses)."""
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
    """Whether `worker` accepts and answers a fresh connection while the others are paused:
    the kernel must hand it the connection, whoever would win the accept race."""
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
    with ExitStack() as winners:
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
                winners.enter_context(paused([worker]))
    return answered


async def eventually(
    predicate: Callable[[], object],
    *,
    within: float,
    what: str,
    seen: Callable[[], object] | None = None,
) -> None:
    """Like tooling.gunicorn.wait_for, but on the event loop: the load it runs goes on between
    looks, and the predicate reads the load's state on the loop's own thread."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            last = "" if seen is None else f"; last saw: {seen()}"
            raise TimeoutError(f"timed out after {within}s waiting for {what}{last}")
        await asyncio.sleep(0.1)


def read(url: str, seconds: float) -> dict[str, object]:
    """GET `url` back to back on one keep-alive connection. Run in its own process, so a load
    generator in the test's process cannot delay it and pass that off as server latency."""
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:200]}")
    return {"latencies_ms": latencies, "failures": failures}


if __name__ == "__main__":
    print(json.dumps(read(sys.argv[1], float(sys.argv[2]))))
