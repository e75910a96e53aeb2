"""A real Prometheus (Debian's) scrapes a 4-worker deployment; PromQL totals equal the
requests sent."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import TEST_ENV, one_response_from_each_worker
from tests.support.system import require_binary
from tooling.gunicorn import run_gunicorn, wait_for
from tooling.postgres import free_port

pytestmark = pytest.mark.gunicorn

SCRAPE_INTERVAL_SECONDS = 1


def promql(port: int, query: str) -> float | None:
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
    )
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_totals_equal_requests_sent(database_url: str) -> None:
    prometheus = require_binary("prometheus", "prometheus")
    sent = {"/livez": 150, "/users": 90}
    with (
        run_gunicorn(database_url, workers=4, env=TEST_ENV) as server,
        tempfile.TemporaryDirectory() as scratch,
    ):
        config = Path(scratch) / "prometheus.yml"
        config.write_text(
            textwrap.dedent(
                f"""
                global:
                  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s
                scrape_configs:
                  - job_name: service
                    static_configs:
                      - targets: ["127.0.0.1:{server.port}"]
                """
            )
        )
        port = free_port()
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={scratch}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _ready(port), timeout=30, what="prometheus ready")
            # One /livez per worker first: which worker accepts a connection is the kernel's
            # and the scheduler's choice, and on a busy machine one may lose every race.
            asyncio.run(
                one_response_from_each_worker(
                    server, lambda http: http.get("/livez", headers={"Connection": "close"})
                )
            )
            for path, count in {**sent, "/livez": sent["/livez"] - 4}.items():
                for _ in range(count):
                    response = httpx.get(
                        server.url + path, headers={"Connection": "close"}, timeout=5
                    )
                    assert response.status_code == 200
            time.sleep(3 * SCRAPE_INTERVAL_SECONDS)

            def totals_arrived() -> bool:
                return all(
                    promql(port, f'sum(http_requests_total{{route="{path}",status="200"}})')
                    == count
                    for path, count in sent.items()
                )

            wait_for(totals_arrived, timeout=60, what="PromQL totals")
            workers_serving = promql(port, "count(worker_requests_total > 0)")
            scraped_pools = promql(port, "sum(db_pool_size)")
        finally:
            process.terminate()
            process.wait(10)
    assert workers_serving == 4
    assert scraped_pools == 40  # 4 workers x the default pool of 10


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
