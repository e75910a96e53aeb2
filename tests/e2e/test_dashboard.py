"""The Grafana dashboard's queries use only metrics a real gunicorn exports, and a real
Prometheus, with the repo's standalone config, evaluates every one of them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import WRONG_PASSWORD, attempt, fresh_address, room_in_window, signup
from tests.support.processes import TEST_ENV
from tests.support.system import require_binary
from tests.support.traffic import Client, Traffic, crossing_batches, item_journey, unique_prefix
from tooling.gunicorn import run_gunicorn, wait_for
from tooling.postgres import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "service.json"

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    stripped = re.sub(r'"[^"]*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        following = stripped[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels.update(label.strip() for label in group.split(",") if label.strip())
    labels.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=~?\s*\"", expr))
    return labels


def for_prometheus(expr: str) -> str:
    return expr.replace("$__rate_interval", "10s").replace('"$instance"', '".*"')


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket"
        '{instance=~"$instance", status=~"5.."}[$__rate_interval]))) / sum(up)'
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up"}
    assert grouping_labels(expr) == {"le", "route", "instance", "status"}


@pytest.mark.gunicorn
async def test_dashboard_queries_use_exported_metrics_and_evaluate(database_url: str) -> None:
    prometheus = require_binary("prometheus", "prometheus")
    traffic = Traffic()
    with run_gunicorn(database_url, workers=2, env=TEST_ENV) as server:
        # Traffic that touches every metric: signups, logins that fail and succeed, item
        # CRUD, a throttled login, a logout, and crossing bulk updates until PostgreSQL
        # reports a deadlock (retried).
        prefix = unique_prefix("dash")
        async with Client([server.url], traffic) as client:
            await item_journey(client, f"{prefix}-a")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await _throttled_login_and_logout(http)
        for round_no in range(4):
            await crossing_batches([server.url], traffic, f"{prefix}-x{round_no}")
            if "db_errors_total" in await _sample_names(server.url):
                break
        # A worker that exits (and is replaced) feeds worker_exits_total/worker_starts_total.
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGTERM)
        wait_for(lambda: len(server.booted_pids()) == 3, timeout=30, what="replacement worker")
        exported = await _sample_labels(server.url)
        assert traffic.errors == [], traffic.errors[:5]
        target_labels = {"instance", "job", "le"}
        queries = dashboard_queries()
        for query in queries:
            names = metric_names(query)
            assert names, query
            for name in names:
                assert name in exported, f"{name} (in {query!r}) is not in /metrics"
            available: set[str] = set().union(*(exported[name] for name in names))
            available |= target_labels
            assert grouping_labels(query) <= available, query
        # A real Prometheus, with the repo's standalone config, evaluates every query; all
        # but the 5xx ones (there were none) must return series.
        with _prometheus(prometheus, server.port) as api:
            unanswered = queries

            def all_answer() -> bool:
                nonlocal unanswered
                unanswered = [
                    q for q in queries if not _query(api, for_prometheus(q)) and "5.." not in q
                ]
                return not unanswered

            try:
                await asyncio.to_thread(
                    wait_for, all_answer, timeout=30, interval=0.5, what="dashboard queries"
                )
            except TimeoutError:
                pytest.fail(f"no series from Prometheus for: {unanswered}")


async def _throttled_login_and_logout(http: httpx.AsyncClient) -> None:
    """Feeds the authentication row: one login refused by the per-(user, address) limit
    (its default, 10 failures per window, is left on in the test settings) and one logout."""
    account = await signup(http)
    address = fresh_address()
    await room_in_window()
    statuses = [
        (await attempt(http, account.name, WRONG_PASSWORD, address)).status_code for _ in range(11)
    ]
    assert statuses == [401] * 10 + [429], statuses
    assert (await http.post("/auth/logout", headers=account.auth)).status_code == 204


async def _scrape_text(base: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(base + "/metrics")).text


async def _sample_names(base: str) -> set[str]:
    return set(await _sample_labels(base))


async def _sample_labels(base: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(await _scrape_text(base)):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def _query(api: str, expr: str) -> list[Any]:
    response = httpx.get(f"{api}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


def _ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _prometheus(binary: str, target_port: int) -> Iterator[str]:
    """The repo's standalone config, pointed at this gunicorn and scraping every second."""
    config_text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert '"localhost:8000"' in config_text
    assert "scrape_interval: 5s" in config_text
    config_text = config_text.replace('"localhost:8000"', f'"127.0.0.1:{target_port}"')
    config_text = config_text.replace("scrape_interval: 5s", "scrape_interval: 1s")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="prometheus-test-") as scratch:
        config = Path(scratch) / "prometheus.yml"
        config.write_text(config_text)
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={scratch}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _ready(api), timeout=30, what="prometheus ready")
            yield api
        finally:
            process.terminate()
            process.wait(10)
