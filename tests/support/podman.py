"""Real images and containers with podman (Debian's), as root, host networking only.

No image registry is reachable here, so the Dockerfile's `PYTHON_IMAGE` is a Debian
bookworm made locally with debootstrap (its Python 3.11, like python:3.11-slim-bookworm)
and imported once; podman's storage lives in a cache directory outside the repository,
so the base image and the build's layers survive between test runs.

What this machine needs (and what the containers get) is in CONTAINERS_CONF below: runc
(crun fails on these cgroups), cgroupfs, file events, ulimits the VM allows, host network.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.system import require_binary

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "service-podman"
# Volatile state (locks, container runtime files) belongs on /run, cleared at boot.
RUN_DIR = Path("/run/service-podman")
BASE_IMAGE = "localhost/service-python-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
SUITE = "bookworm"
# Periodic healthchecks need systemd timers (none here): run them with `healthcheck run`.
NO_HEALTH_TIMER = "--health-interval=disable"

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
    *args: str, timeout: float = 120, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=dict(env) if env is not None else podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The first mirror this machine's apt sources use for the bookworm suite."""
    one_line = re.compile(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", re.MULTILINE)
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = dict(
                    re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE)
                )
                if (
                    "deb" in fields.get("Types", "").split()
                    and SUITE in fields.get("Suites", "").split()
                ):
                    return str(fields["URIs"].split()[0])
        elif path.suffix == ".list" or path.name == "sources.list":
            for uri, suite in one_line.findall(text):
                if suite == SUITE:
                    return str(uri)
    raise RuntimeError(f"no apt source for Debian {SUITE} under {sources}: debootstrap needs one")


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / name).open("a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base_image(env: Mapping[str, str]) -> str:
    """BASE_IMAGE, made with debootstrap and imported the first time (about a minute)."""
    with _locked("base.lock"):
        if podman("image", "exists", BASE_IMAGE, check=False, env=env).returncode == 0:
            return BASE_IMAGE
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="debootstrap-") as scratch:
            root = Path(scratch) / "root"
            made = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    *(SUITE, str(root), debian_mirror()),
                ],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if made.returncode != 0:
                raise RuntimeError(f"debootstrap failed:\n{made.stdout[-3000:]}{made.stderr}")
            # What python:*-slim leaves out too: downloaded packages and package lists.
            subprocess.run(
                ["sh", "-c", f"rm -rf {root}/var/cache/apt/* {root}/var/lib/apt/lists/*"],
                check=True,
            )
            archive = Path(scratch) / "root.tar"
            subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
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
                env=env,
            )
    return BASE_IMAGE


@dataclass(frozen=True)
class Container:
    name: str
    env: Mapping[str, str]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman(*args, check=check, env=self.env)

    def host_pid(self) -> int:
        """The container's first process (gunicorn's master) as the host sees it."""
        return int(self.podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def healthy(self) -> bool:
        return self.podman("healthcheck", "run", self.name, check=False).returncode == 0

    def logs(self) -> str:
        result = self.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exit_code(self) -> int:
        return int(self.podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout)


def run_args(environment: Mapping[str, str]) -> list[str]:
    """What every container here gets: host network, read-only root, no health timer."""
    flags = ["--network=host", "--read-only", NO_HEALTH_TIMER]
    for key, value in environment.items():
        flags += ["--env", f"{key}={value}"]
    return flags


def run_once(image: str, environment: Mapping[str, str], *command: str) -> tuple[int, str]:
    """`podman run --rm IMAGE command...`: its exit code and output."""
    result = podman("run", "--rm", *run_args(environment), image, *command, check=False)
    return result.returncode, result.stdout + result.stderr


@contextmanager
def running(image: str, environment: Mapping[str, str]) -> Iterator[Container]:
    """The image's own command, detached; removed (killed if still running) at exit."""
    env = podman_env()
    name = f"service-test-{uuid.uuid4().hex[:10]}"
    podman("run", "--detach", "--name", name, *run_args(environment), image, env=env)
    try:
        yield Container(name, env)
    finally:
        podman("rm", "--force", "--time=5", name, check=False, env=env)
