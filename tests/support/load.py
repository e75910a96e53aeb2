"""Bounded background load for lifecycle tests: N clients hammering one route."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    workers: Counter[str] = field(default_factory=Counter)
    retried_on_closed_connection: int = 0

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status < 400)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(
            count for status, count in self.statuses.items() if status >= 500
        )


async def _retry_get(
    http: httpx.AsyncClient, path: str, result: LoadResult, attempts: int = 2
) -> httpx.Response | None:
    for attempt in range(attempts):
        result.retried_on_closed_connection += 1
        try:
            return await http.get(path)
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            if attempt == attempts - 1:
                result.errors.append(f"after {attempts} retries {type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            result.errors.append(f"on retry {type(exc).__name__}: {exc}")
            return None
    return None


async def steady_load(
    base_url: str,
    stop: asyncio.Event,
    *,
    path: str = "/users?limit=5",
    clients: int = 8,
    request_timeout: float = 30.0,
    max_seconds: float = 120.0,
    retry_closed_keepalive: bool = True,
    result: LoadResult | None = None,
) -> LoadResult:
    """Each client sends GETs back to back (keep-alive, as real clients do) until `stop` is
    set or max_seconds pass.

    A worker that shuts down closes its idle keep-alive connections, and a request sent on
    one at that instant meets a closed socket before any response byte. RFC 9112 section
    9.3.1 allows a client to retry an idempotent request then, and browsers, Go and OkHttp
    do; with `retry_closed_keepalive` this client does too (up to twice more, since the
    fresh connection may itself be accepted by a worker that is stopping), and counts it.

    Pass `result` to watch progress while the load runs. The request timeout is generous:
    on a busy machine a request queued while replacement workers boot may wait seconds,
    and these tests count failures; latency belongs to the benchmarks."""
    result = result if result is not None else LoadResult()
    deadline = time.monotonic() + max_seconds

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=request_timeout) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    response = await http.get(path)
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    if not retry_closed_keepalive:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    retried = await _retry_get(http, path, result)
                    if retried is None:
                        continue
                    response = retried
                except httpx.HTTPError as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.statuses[response.status_code] += 1
                result.workers[response.headers.get("x-worker-id", "?")] += 1

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return result
