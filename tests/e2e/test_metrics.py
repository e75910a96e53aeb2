"""Prometheus metrics across workers: counts that reconcile, whichever worker answers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import TEST_ENV, eventually, steady_load
from tests.support.system import require_binary
from tooling.gunicorn import Gunicorn, run_gunicorn, wait_for
from tooling.metrics import Samples, read_samples
from tooling.postgres import free_port

pytestmark = pytest.mark.gunicorn


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name].get(frozenset(labels.items()), 0.0)


def per_worker(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: v for labels, v in samples[name].items()}


async def scrape(server: Gunicorn) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        for attempt in range(3):
            try:
                response = await http.get(server.url + "/metrics")
                break
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A worker that is stopping may accept a connection and close it unanswered;
                # a scraper retries, as Prometheus does on its next interval.
                if attempt == 2:
                    raise
    assert response.status_code == 200
    return read_samples(response.text)


async def test_counts_reconcile_exactly_on_every_scrape(database_url: str) -> None:
    with run_gunicorn(database_url, workers=4, env=TEST_ENV) as server:
        k = 0
        served_by: set[str] = set()
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            # At least 200 requests, and on until every worker has served some: fresh
            # connections let the kernel spread them, but a busy machine may starve one.
            while k < 200 or (len(served_by) < 4 and k < 3000):
                response = await http.get("/livez", headers={"Connection": "close"})
                assert response.status_code == 200
                served_by.add(response.headers["x-worker-id"])
                k += 1
        for scrape_no in range(6):
            samples = await scrape(server)
            route_total = value(
                samples, "http_requests_total", method="GET", route="/livez", status="200"
            )
            assert route_total == k
            workers = per_worker(samples, "worker_requests_total")
            # Every worker served; each earlier scrape is one more request somewhere.
            assert set(workers) == {"0", "1", "2", "3"}
            assert all(count > 0 for count in workers.values())
            assert sum(workers.values()) == k + scrape_no
            assert (
                value(samples, "http_request_duration_seconds_count", method="GET", route="/livez")
                == k
            )


async def test_killed_worker_keeps_its_counts_and_drops_its_live_gauges(
    database_url: str,
) -> None:
    with run_gunicorn(database_url, workers=4, env={**TEST_ENV, "DB_POOL_SIZE": "5"}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(100):
                await http.get("/users", headers={"Connection": "close"})
        before = await scrape(server)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        await eventually(
            lambda: victim not in server.worker_pids() and len(server.booted_workers()) == 4,
            within=60,
            what=f"a booted replacement for worker {victim}",
            seen=server.process_table,
        )
        after = await scrape(server)
        files = sorted(path.name for path in server.metrics_dir.iterdir())
    total = "http_requests_total"
    key = frozenset({"method": "GET", "route": "/users", "status": "200"}.items())
    assert before[total][key] == 100
    assert after[total][key] == 100  # the dead worker's counts survive it
    assert sum(per_worker(after, "worker_requests_total").values()) >= sum(
        per_worker(before, "worker_requests_total").values()
    )
    # Live gauges: 4 workers x pool of 5, not 5 x 5 (the dead worker's value is gone).
    assert sum(per_worker(after, "db_pool_size").values()) == 20
    assert not any(str(victim) in name for name in files), files
    assert (
        value(after, "worker_exits_total", worker="0")
        + sum(v for labels, v in after["worker_exits_total"].items())
        >= 1
    )


async def test_gauges_return_to_zero_when_load_stops(database_url: str) -> None:
    with run_gunicorn(database_url, workers=4, env=TEST_ENV) as server:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(server.url, stop, clients=12))
        await asyncio.sleep(1.5)
        during = await scrape(server)
        stop.set()
        result = await load
        await asyncio.sleep(0.2)
        after = await scrape(server)
    assert result.failed == 0
    assert sum(per_worker(during, "db_pool_checked_out").values()) >= 0
    # The scrape itself is the one request in progress.
    assert sum(per_worker(after, "http_requests_in_progress").values()) == 1
    assert sum(per_worker(after, "db_pool_checked_out").values()) == 0
    assert sum(per_worker(after, "db_pool_overflow").values()) == 0


async def test_exposition_is_valid_for_prometheus_and_promtool(
    gunicorn_server: Gunicorn,
) -> None:
    promtool = require_binary("promtool", "prometheus")
    async with httpx.AsyncClient(base_url=gunicorn_server.url, timeout=5) as http:
        await http.post("/users", json={"name": "x", "password": "short"})
        await http.post("/auth/token", data={"username": "nobody", "password": "nothing1"})
        exposition = (await http.get("/metrics")).text
    families = {family.name for family in text_string_to_metric_families(exposition)}
    for expected in [
        "http_requests",
        "http_request_duration_seconds",
        "http_requests_in_progress",
        "worker_requests",
        "worker_starts",
        "db_pool_size",
        "db_pool_checked_out",
        "db_pool_overflow",
        "db_pool_checkout_wait_seconds",
        "db_query_duration_seconds",
        "auth_logins",
        "password_hash_duration_seconds",
        "service_build_info",
    ]:
        assert expected in families, expected
    assert "nobody" not in exposition  # no user data in labels
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_metrics_directory_stays_bounded_over_many_recyclings(database_url: str) -> None:
    env = {"MAX_REQUESTS": "20", "MAX_REQUESTS_JITTER": "5"}
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(server.url, stop, path="/livez", clients=4))
        await eventually(
            lambda: len(server.booted_pids()) >= 30, within=90, what="30 worker generations"
        )
        stop.set()
        result = await load
        samples = await scrape(server)
        files = [path for path in server.metrics_dir.iterdir() if path.suffix == ".db"]
        booted = len(server.booted_pids())
    served = value(samples, "http_requests_total", method="GET", route="/livez", status="200")
    assert result.failed == 0, result.errors[:3]
    assert served == result.ok  # every request still counted after ~28 dead workers
    # Bounded by the live processes, not by the number that ever lived: per live process
    # at most counter, histogram, two gauge files; plus three archives.
    assert len(files) <= 4 * (2 + 1) + 3, sorted(p.name for p in files)
    print(f"{booted} workers booted, {len(files)} metric files at the end")


def test_master_serves_the_aggregate_on_its_own_port(database_url: str) -> None:
    metrics_port = free_port()
    env = {"METRICS_BIND": f"127.0.0.1:{metrics_port}", "METRICS_ENDPOINT": "false"}
    with run_gunicorn(database_url, workers=2, env=TEST_ENV | env) as server:
        for _ in range(30):
            httpx.get(server.url + "/livez", headers={"Connection": "close"}, timeout=5)
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 404
        wait_for(lambda: _port_answers(metrics_port), timeout=10, what="the master's metrics port")
        samples = read_samples(
            httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        )
        metrics_process = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    assert value(samples, "http_requests_total", method="GET", route="/livez", status="200") == 30
    assert metrics_process.strip()
    wait_for(lambda: not _port_answers(metrics_port), timeout=10, what="metrics server exit")


def _port_answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
    except httpx.HTTPError:
        return False
    return True
