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
from tests.support.processes import TEST_ENV, LoadResult, eventually, served_by, steady_load
from tooling.gunicorn import Gunicorn, run_gunicorn, wait_for
from tooling.processes import cpu_seconds

pytestmark = pytest.mark.gunicorn


def _workers_cpu(server: Gunicorn) -> float:
    return sum(cpu_seconds(pid) for pid in server.worker_pids())


async def _progress(result: LoadResult, more: int, what: str) -> None:
    """Wait (bounded) for `more` successful requests beyond those answered so far: how long
    that takes depends on the machine; that it happens does not."""
    target = result.ok + more
    await eventually(
        lambda: result.ok >= target,
        within=60,
        what=f"{more} more successful requests {what}",
        seen=lambda: (
            f"{result.ok} ok of {target}, statuses {dict(result.statuses)}, "
            f"errors {result.errors[-3:]}"
        ),
    )


async def test_sigterm_lets_in_flight_requests_finish_then_exits_0(database_url: str) -> None:
    # Cost-14 bcrypt makes each sign-up a naturally slow request (about a second here).
    # Two hashing slots per worker and a long queue: all four run, none is shed with 503.
    env = {"BCRYPT_ROUNDS": "14", "HASH_CONCURRENCY": "2", "HASH_QUEUE_TIMEOUT_SECONDS": "30"}
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            names = [unique_name() for _ in range(4)]
            idle_cpu = _workers_cpu(server)
            in_flight = [
                asyncio.create_task(http.post("/users", json={"name": n, "password": PASSWORD}))
                for n in names
            ]
            # In flight means being hashed: wait for the workers' CPU time, not a fixed delay
            # that a busy machine may not honour.
            await eventually(
                lambda: _workers_cpu(server) - idle_cpu > 0.5,
                within=30,
                what="the workers to spend 0.5 s of CPU hashing the sign-ups",
                seen=lambda: f"{_workers_cpu(server) - idle_cpu:.2f} s",
            )
            assert not any(task.done() for task in in_flight), "sign-ups finished before SIGTERM"
            server.process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [201] * 4
        assert await asyncio.to_thread(server.process.wait, 30) == 0
        assert "Shutting down" in server.log()


async def test_sighup_reload_under_load_fails_nothing(database_url: str) -> None:
    with run_gunicorn(database_url, workers=2, env=TEST_ENV) as server:
        before = set(server.worker_pids())
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(steady_load(server.url, stop, result=result))
        await _progress(result, 100, "before the reload")
        server.process.send_signal(signal.SIGHUP)
        await eventually(
            lambda: (
                len(server.worker_pids()) == 2
                and before.isdisjoint(server.worker_pids())
                and len(server.booted_workers()) == 2
            ),
            within=60,
            what="two new booted workers replacing the old ones",
            seen=server.process_table,
        )
        await _progress(result, 100, "after the reload")
        stop.set()
        result = await load
        after = set(server.worker_pids())
        new_workers_serve = [await served_by(server, pid) for pid in after]
    assert before.isdisjoint(after)
    assert result.failed == 0, result.errors[:5]
    assert all(new_workers_serve)


async def test_ttin_adds_a_serving_worker_and_ttou_removes_one(database_url: str) -> None:
    with run_gunicorn(database_url, workers=2, env=TEST_ENV) as server:
        original = set(server.worker_pids())
        server.process.send_signal(signal.SIGTTIN)
        await eventually(
            lambda: len(server.worker_pids()) == 3,
            within=60,
            what="3 workers",
            seen=server.process_table,
        )
        added = set(server.worker_pids()) - original
        await eventually(
            lambda: added <= server.booted_pids(),
            within=60,
            what=f"worker {added} to boot",
            seen=server.process_table,
        )
        (new_worker,) = added
        assert await served_by(server, new_worker)
        server.process.send_signal(signal.SIGTTOU)
        await eventually(
            lambda: len(server.worker_pids()) == 2,
            within=60,
            what="2 workers",
            seen=server.process_table,
        )


async def test_max_requests_recycles_every_worker_without_failures(database_url: str) -> None:
    env = {"MAX_REQUESTS": "60", "MAX_REQUESTS_JITTER": "20"}
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        original = set(server.worker_pids())
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(steady_load(server.url, stop, clients=6, result=result))
        await eventually(
            lambda: original.isdisjoint(server.worker_pids()) and len(server.booted_workers()) == 2,
            within=120,
            what="every original worker recycled and replaced",
            seen=server.process_table,
        )
        await _progress(result, 50, "after the recycling")
        stop.set()
        await load
    assert result.failed == 0, result.errors[:5]


async def test_sigkill_of_a_worker_is_respawned_and_only_its_requests_fail(
    database_url: str,
) -> None:
    clients = 8
    with run_gunicorn(database_url, workers=2, env=TEST_ENV) as server:
        victims = server.worker_pids()
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(
            steady_load(
                server.url, stop, clients=clients, retry_closed_keepalive=False, result=result
            )
        )
        await _progress(result, 50, "before the kill")
        killed = victims[0]
        os.kill(killed, signal.SIGKILL)
        await eventually(
            lambda: killed not in server.worker_pids() and len(server.booted_workers()) == 2,
            within=60,
            what=f"a booted replacement for worker {killed}",
            seen=server.process_table,
        )
        replacement = (set(server.worker_pids()) - set(victims)).pop()
        await _progress(result, 50, "after the respawn")
        stop.set()
        await load
        # Keep-alive clients stay on the survivor; fresh connections reach the replacement.
        replacement_served = await served_by(server, replacement)
    # At most the requests in flight on the killed worker: one per client connected to it.
    assert result.failed <= clients, result.errors
    assert all("disconnected" in e or "ReadError" in e for e in result.errors), result.errors
    assert replacement_served


async def test_a_worker_blocked_past_timeout_is_replaced_while_others_serve(
    database_url: str,
) -> None:
    # 5 s: long enough that a busy machine never delays a healthy worker's heartbeat (sent
    # every timeout / 2) past it, short against the 30 s block.
    env = {"TIMEOUT": "5", "APP_MODULE": "tests.support.faults:faulty_app()"}
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        original = set(server.worker_pids())
        async with httpx.AsyncClient(base_url=server.url, timeout=25) as http:
            blocked = asyncio.create_task(http.get("/_test/block", params={"seconds": 30}))
            await asyncio.sleep(0.3)
            served_meanwhile = 0
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as other:
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
            within=60,
            what="the blocked worker replaced",
            seen=server.process_table,
        )
        log = server.log()
    assert served_meanwhile == 20
    assert "WORKER TIMEOUT" in log
    assert "timed out; stacks" in log
    assert "time.sleep(seconds)" in log


def test_connections_arriving_before_workers_boot_are_queued(database_url: str) -> None:
    with run_gunicorn(database_url, workers=4, wait=False, env=TEST_ENV) as server:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.01)
        booted_when_first_connected = len(server.booted_pids())
        responses = [httpx.get(server.url + "/livez", timeout=60) for _ in range(10)]
        wait_for(
            lambda: len(server.booted_pids()) == 4,
            timeout=60,
            what="4 booted workers",
            seen=server.process_table,
        )
    assert [r.status_code for r in responses] == [200] * 10
    # The master listened before any worker was ready: early connections waited in the
    # backlog rather than being refused.
    assert booted_when_first_connected < 4
