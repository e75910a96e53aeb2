"""Slow and idle clients cannot hold a worker's connections: the header deadline, the
keep-alive idle bound and the per-worker connection limit (service/core/protocol.py)."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.processes import TEST_ENV
from tooling.gunicorn import Gunicorn, run_gunicorn

pytestmark = pytest.mark.gunicorn

HEADER_TIMEOUT = 3
SLOW_CLIENTS = 3000
IDLE_CLIENTS = 200
# A busy 2-core machine may fire thousands of timers late; the bound is still seconds.
CLOSE_MARGIN = 7.0
CONNECT_CONCURRENCY = 200


def ensure_fd_limit(needed: int) -> None:
    """This process and the workers it starts (who inherit the limit) hold one descriptor per
    connection. Raise the soft limit towards the hard one; fail clearly if that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"needs {needed} file descriptors, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclass
class Outcome:
    seconds_open: float
    first_bytes: bytes
    closed_by_server: bool


async def hold_open(
    port: int, gate: asyncio.Semaphore, *, opening: bytes, trickle: bytes | None, give_up: float
) -> Outcome:
    """Connect, send `opening`, then `trickle` once a second, until the server answers or
    closes (or `give_up` seconds pass: then the connection was held, and we close it)."""
    async with gate:  # throttles only the connecting (the listen backlog), not the holding
        opened = time.monotonic()  # before connecting: the server's clock starts later
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(opening)
    read = asyncio.ensure_future(reader.read(4096))
    try:
        while time.monotonic() - opened < give_up:
            done, _ = await asyncio.wait({read}, timeout=1.0)
            if done:
                break
            if trickle and not writer.is_closing():
                writer.write(trickle)
        if not read.done():
            read.cancel()
            return Outcome(time.monotonic() - opened, b"", closed_by_server=False)
        try:
            data = read.result()
        except ConnectionError:
            data = b""
        return Outcome(time.monotonic() - opened, data, closed_by_server=True)
    finally:
        writer.close()


async def many(
    count: int, port: int, *, opening: bytes, trickle: bytes | None, give_up: float
) -> list[Outcome]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients = (
        hold_open(port, gate, opening=opening, trickle=trickle, give_up=give_up)
        for _ in range(count)
    )
    return await asyncio.gather(*clients)


async def steady_requests(url: str, stop: asyncio.Event) -> list[tuple[int, float]]:
    """Normal clients meanwhile: a health check and a database read, back to back."""
    answers: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not stop.is_set():
            for path in ("/livez", "/users?limit=1"):
                started = time.monotonic()
                response = await http.get(path)
                answers.append((response.status_code, time.monotonic() - started))
            await asyncio.sleep(0.05)
    return answers


@pytest.fixture(scope="module")
def slow_client_server(database_url: str) -> Iterator[Gunicorn]:
    ensure_fd_limit(2 * (SLOW_CLIENTS + IDLE_CLIENTS) + 1024)
    env = {
        "HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "KEEPALIVE": "2",
        # Above the slow clients, so this test sees the header deadline, not the limit.
        "LIMIT_CONCURRENCY": str(2 * SLOW_CLIENTS),
    }
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        yield server


async def test_thousands_of_slow_clients_are_cut_off_while_others_are_served(
    slow_client_server: Gunicorn,
) -> None:
    port = slow_client_server.port
    give_up = HEADER_TIMEOUT + CLOSE_MARGIN + 10
    stop = asyncio.Event()
    normal = asyncio.ensure_future(steady_requests(slow_client_server.url, stop))
    started = time.monotonic()
    slow, idle = await asyncio.gather(
        many(
            SLOW_CLIENTS,
            port=port,
            opening=b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            trickle=b"X-Slow: 1\r\n",
            give_up=give_up,
        ),
        many(IDLE_CLIENTS, port=port, opening=b"", trickle=None, give_up=give_up),
    )
    elapsed = time.monotonic() - started
    stop.set()
    answers = await normal

    held = [o for o in slow + idle if not o.closed_by_server]
    assert not held, f"{len(held)} connections still open after {give_up}s"
    slowest = max(o.seconds_open for o in slow + idle)
    earliest = min(o.seconds_open for o in slow + idle)
    assert slowest <= HEADER_TIMEOUT + CLOSE_MARGIN, f"slowest closed after {slowest:.1f}s"
    assert earliest >= HEADER_TIMEOUT - 0.1, f"one was closed early, after {earliest:.2f}s"
    not_408 = [o.first_bytes[:40] for o in slow if not o.first_bytes.startswith(b"HTTP/1.1 408")]
    assert not not_408, f"{len(not_408)} slow clients got no 408, e.g. {not_408[:3]}"
    body = json.loads(slow[0].first_bytes.split(b"\r\n\r\n", 1)[1])
    assert body == {"detail": "Request headers not received in time"}
    # A client that never sent a byte is closed silently, like an idle keep-alive connection.
    assert all(o.first_bytes == b"" for o in idle)

    statuses = {status for status, _ in answers}
    assert statuses == {200}, f"normal requests answered {statuses}"
    assert len(answers) >= 20, f"only {len(answers)} normal requests in {elapsed:.1f}s"
    worst = max(seconds for _, seconds in answers)
    assert worst < 5, f"a normal request took {worst:.1f}s"
    print(
        f"\n{SLOW_CLIENTS} slow + {IDLE_CLIENTS} idle clients closed after "
        f"{earliest:.2f}-{slowest:.2f}s; {len(answers)} normal requests, all 200, "
        f"slowest {worst * 1000:.0f} ms"
    )


async def kept_alive_after_one_request(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has had one whole answer and is now idle (kept alive)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(len(b'{"status":"ok"}'))
    return reader, writer


async def test_idle_keep_alive_connection_is_closed_after_keepalive(
    slow_client_server: Gunicorn,
) -> None:
    reader, writer = await kept_alive_after_one_request(slow_client_server.port)
    try:
        answered = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), timeout=30)  # EOF when the server closes
        idle = time.monotonic() - answered
    finally:
        writer.close()
    assert rest == b""
    assert 1.5 <= idle <= 2 + CLOSE_MARGIN, f"idle keep-alive connection closed after {idle:.1f}s"


def test_connections_past_the_limit_get_a_json_503(database_url: str) -> None:
    env = {"LIMIT_CONCURRENCY": "20", "HEADER_TIMEOUT": "60"}
    with run_gunicorn(database_url, workers=1, env=TEST_ENV | env) as server:
        holders = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        try:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                time.sleep(0.5)  # let the worker accept all 20
                refused = http.get("/livez")
                assert refused.status_code == 503, refused.text
                assert refused.json()["reason"] == "connection_limit"
                assert refused.headers["retry-after"] == "1"
                assert refused.headers["connection"] == "close"
                for holder in holders[:5]:
                    holder.close()
                deadline = time.monotonic() + 10
                while http.get("/livez").status_code != 200:
                    assert time.monotonic() < deadline, "still 503 after closing 5 connections"
                    time.sleep(0.1)
        finally:
            for holder in holders:
                holder.close()


async def test_a_slow_second_request_on_a_kept_alive_connection_is_cut_off(
    slow_client_server: Gunicorn,
) -> None:
    """The deadline starts again at the first byte of each later request."""
    reader, writer = await kept_alive_after_one_request(slow_client_server.port)
    try:
        await asyncio.sleep(1)  # idle, but within KEEPALIVE (2 s)
        writer.write(b"GET /livez HTTP/1.1\r\n")
        begun = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
        waited = time.monotonic() - begun
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
    assert HEADER_TIMEOUT - 0.1 <= waited <= HEADER_TIMEOUT + CLOSE_MARGIN, waited
