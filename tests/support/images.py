"""Images built from this repository's Dockerfiles with podman, on the local Debian base.

Built once per test session (functools.cache); podman's layer cache keeps rebuilds fast
across sessions."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.podman import PROJECT_ROOT, ensure_base_image, podman, podman_env


@dataclass(frozen=True)
class Image:
    id: str
    tag: str
    build_seconds: float
    config: dict[str, Any]
    healthcheck: dict[str, Any]
    size_bytes: int
    base_size_bytes: int

    @property
    def uid(self) -> int:
        return int(str(self.config["User"]).split(":")[0])


def _inspect_image(reference: str, env: Mapping[str, str]) -> dict[str, Any]:
    inspected: list[dict[str, Any]] = json.loads(
        podman("image", "inspect", reference, env=env).stdout
    )
    return inspected[0]


def build_image(context: Path, name: str, base_arg: str) -> Image:
    """`podman build` of context/Dockerfile on the local base (`--build-arg base_arg=`),
    in Docker format so a HEALTHCHECK is kept, tagged localhost/name:<image id> (sessions
    of other checkouts may build at the same time: a content tag never moves). Outbound TLS
    here may go through a proxy with its own CA: the host's bundle (SSL_CERT_FILE)
    replaces the base's during the build, never in the image."""
    env = podman_env()
    base = ensure_base_image(env)
    bundle = os.environ.get("SSL_CERT_FILE")
    mounts = ["-v", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if bundle else []
    with tempfile.TemporaryDirectory() as scratch:
        iidfile = Path(scratch) / "iid"
        started = time.monotonic()
        podman(
            "build",
            "--format=docker",
            "--network=host",
            f"--build-arg={base_arg}={base}",
            f"--iidfile={iidfile}",
            *mounts,
            "--file",
            str(context / "Dockerfile"),
            str(context),
            timeout=900,
            env=env,
        )
        seconds = time.monotonic() - started
        image_id = iidfile.read_text().strip()
    tag = f"localhost/{name}:{image_id.removeprefix('sha256:')[:12]}"
    podman("tag", image_id, tag, env=env)
    inspected = _inspect_image(image_id, env)
    return Image(
        id=image_id,
        tag=tag,
        build_seconds=seconds,
        config=inspected["Config"],
        healthcheck=inspected.get("Healthcheck") or {},
        size_bytes=int(inspected["Size"]),
        base_size_bytes=int(_inspect_image(base, env)["Size"]),
    )


@cache
def service_image() -> Image:
    """The project's image, built once per test session (layers cached across sessions)."""
    return build_image(PROJECT_ROOT, "service", "PYTHON_IMAGE")


@cache
def prometheus_image() -> Image:
    """deploy/prometheus/Dockerfile: Debian's prometheus package on the same base."""
    return build_image(PROJECT_ROOT / "deploy" / "prometheus", "service-prometheus", "DEBIAN_IMAGE")
