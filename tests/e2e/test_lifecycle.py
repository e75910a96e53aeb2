"""Gunicorn lifecycle under load, each with a real master and real workers on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import httpx
import pytest

from tests.support.api import PASSWORD, unique_name
from tests.support.load import steady_load
from tests.support.processes import eventually, run_gunicorn, wait_for

pytestmark = pytest.mark.gunicorn


async def _served_by(base_url: str, worker_pid: str, attempts: int = 300) -> bool:
    """Whether `worker_pid` answers one of `attempts` requests on fresh connections."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        for _ in range(attempts):
            response = await http.get("/livez", headers={"Connection": "close"})
            if response.headers["x-worker-id"] == worker_pid:
                return True
    return False


async def test_sigterm_lets_in_flight_requests_finish_then_exits_0(database_url: str) -> None:
    # Cost-14 bcrypt makes each sign-up a naturally slow request (about a second here).
    # Two hashing slots per worker and a long queue: all four run, none is shed with 503.
    env = {"BCRYPT_ROUNDS": "14", "HASH_CONCURRENCY": "2", "HASH_QUEUE_TIMEOUT_SECONDS": "30"}
    with run_gunicorn(database_url, workers=2, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            names = [unique_name() for _ in range(4)]
            in_flight = [
                asyncio.create_task(http.post("/users", json={"name": n, "password": PASSWORD}))
                for n in names
            ]
            await asyncio.sleep(0.3)
            server.send(signal.SIGTERM)
            responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [201] * 4
        assert await asyncio.to_thread(server.process.wait, 30) == 0
        assert "Shutting down" in server.log()


async def test_sighup_reload_under_load_fails_nothing(database_url: str) -> None:
    with run_gunicorn(database_url, workers=2) as server:
        before = set(server.worker_pids())
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(server.url, stop))
        await asyncio.sleep(1)
        server.send(signal.SIGHUP)
        await eventually(
            lambda: len(set(server.worker_pids()) - before) == 2 and len(server.worker_pids()) == 2,
            within=30,
            what="two new workers replacing the old ones",
        )
        await asyncio.sleep(1.5)
        stop.set()
        result = await load
        after = set(server.worker_pids())
        new_workers_serve = [await _served_by(server.url, str(pid)) for pid in after]
    assert before.isdisjoint(after)
    assert result.failed == 0, result.errors[:5]
    assert result.ok > 200
    assert all(new_workers_serve)


async def test_ttin_adds_a_serving_worker_and_ttou_removes_one(database_url: str) -> None:
    with run_gunicorn(database_url, workers=2) as server:
        original = set(server.worker_pids())
        server.send(signal.SIGTTIN)
        await eventually(lambda: len(server.worker_pids()) == 3, within=20, what="3 workers")
        added = set(server.worker_pids()) - original
        await eventually(lambda: added <= server.booted_pids(), within=20, what="boot")
        (new_worker,) = added
        assert await _served_by(server.url, str(new_worker))
        server.send(signal.SIGTTOU)
        await eventually(lambda: len(server.worker_pids()) == 2, within=30, what="2 workers")


async def test_max_requests_recycles_every_worker_without_failures(database_url: str) -> None:
    env = {"MAX_REQUESTS": "60", "MAX_REQUESTS_JITTER": "20"}
    with run_gunicorn(database_url, workers=2, env=env) as server:
        original = set(server.worker_pids())
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(server.url, stop, clients=6))
        await eventually(
            lambda: original.isdisjoint(server.worker_pids()) and len(server.worker_pids()) == 2,
            within=60,
            what="every original worker recycled",
        )
        await asyncio.sleep(1)
        stop.set()
        result = await load
    assert result.failed == 0, result.errors[:5]
    assert result.ok > 150


async def test_sigkill_of_a_worker_is_respawned_and_only_its_requests_fail(
    database_url: str,
) -> None:
    clients = 8
    with run_gunicorn(database_url, workers=2) as server:
        victims = server.worker_pids()
        stop = asyncio.Event()
        load = asyncio.create_task(
            steady_load(server.url, stop, clients=clients, retry_closed_keepalive=False)
        )
        await asyncio.sleep(1)
        killed = victims[0]
        os.kill(killed, signal.SIGKILL)
        await eventually(
            lambda: killed not in server.worker_pids() and len(server.worker_pids()) == 2,
            within=20,
            what="respawn",
        )
        replacement = (set(server.worker_pids()) - set(victims)).pop()
        await eventually(lambda: replacement in server.booted_pids(), within=20, what="boot")
        await asyncio.sleep(1)
        stop.set()
        result = await load
        # Keep-alive clients stay on the survivor; fresh connections reach the replacement.
        replacement_served = await _served_by(server.url, str(replacement))
    # At most the requests in flight on the killed worker: one per client connected to it.
    assert result.failed <= clients, result.errors
    assert all("disconnected" in e or "ReadError" in e for e in result.errors), result.errors
    assert replacement_served
    assert result.ok > 100


async def test_a_worker_blocked_past_timeout_is_replaced_while_others_serve(
    database_url: str,
) -> None:
    env = {"TIMEOUT": "2", "APP_MODULE": "tests.support.faulty_app:create_app()"}
    with run_gunicorn(database_url, workers=2, env=env) as server:
        original = set(server.worker_pids())
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            blocked = asyncio.create_task(http.get("/_test/block", params={"seconds": 30}))
            await asyncio.sleep(0.3)
            served_meanwhile = 0
            async with httpx.AsyncClient(base_url=server.url, timeout=2) as other:
                for _ in range(20):
                    response = await other.get("/livez", headers={"Connection": "close"})
                    served_meanwhile += response.status_code == 200
                    await asyncio.sleep(0.1)
            with pytest.raises(httpx.HTTPError):
                await blocked
        await eventually(
            lambda: (
                len(original - set(server.worker_pids())) == 1 and len(server.worker_pids()) == 2
            ),
            within=20,
            what="the blocked worker replaced",
        )
        log = server.log()
    assert served_meanwhile == 20
    assert "WORKER TIMEOUT" in log
    assert "timed out; stacks" in log
    assert "time.sleep(seconds)" in log


def test_connections_arriving_before_workers_boot_are_queued(database_url: str) -> None:
    with run_gunicorn(database_url, workers=4, wait=False) as server:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.01)
        booted_when_first_connected = len(server.booted_pids())
        responses = [httpx.get(server.url + "/livez", timeout=15) for _ in range(10)]
        wait_for(lambda: len(server.booted_pids()) == 4, timeout=30, what="boot")
    assert [r.status_code for r in responses] == [200] * 10
    # The master listened before any worker was ready: early connections waited in the
    # backlog rather than being refused.
    assert booted_when_first_connected < 4
