"""The server configurations under test, and how one is started (timed to its first 200),
its workers found, and stopped (tooling.gunicorn's launcher for every kind of server)."""

from __future__ import annotations

import contextlib
import http.client
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tooling.gunicorn import launch, stop
from tooling.postgres import free_port
from tooling.processes import children_of, cmdline

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
_LOGGING = shlex.quote(str(BENCH_DIR / "uvicorn_logging.json"))
# As one would type them after `python`; "{port}" is replaced per start (gunicorn reads BIND
# from the environment).
_GUNICORN = "-m gunicorn -c gunicorn.conf.py"
# The floor starts in benchmarks/, where gunicorn finds no gunicorn.conf.py: these flags only.
_FLOOR = (
    f"-m gunicorn --pythonpath {shlex.quote(str(PROJECT_ROOT))} --bind 127.0.0.1:{{port}}"
    " -k service.core.worker.ServiceWorker --keep-alive 5 --log-level warning"
    " --no-control-socket 'benchmarks.floor_app:create_app()'"
)
_UVICORN = (
    "-m uvicorn --factory service.app:create_app --host 127.0.0.1 --loop uvloop --http httptools "
    f"--lifespan on --no-access-log --timeout-keep-alive 5 --log-config {_LOGGING} --port {{port}}"
)
_GRANIAN = (
    "-m granian --interface asgi --factory --host 127.0.0.1 --loop uvloop --no-access-log "
    f"--workers 2 --log-config {_LOGGING} --port {{port}} service.app:create_app"
)
APP_WORKLOADS = ("read", "user", "insert", "list", "signup")
# Read at other connection counts, for the scaling curve (50 is `read` itself).
SCALING_WORKLOADS = ("c10", "c200", "c1000")
READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    key: str
    label: str
    command: str  # after `python`
    workloads: tuple[str, ...] = ("read",)
    workers: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = PROJECT_ROOT


CONFIGS: dict[str, ServerConfig] = {
    config.key: config
    for config in (
        ServerConfig(
            "gunicorn",
            "1 gunicorn -c gunicorn.conf.py, 2 workers (this deployment)",
            _GUNICORN,
            ("steady", *APP_WORKLOADS, *SCALING_WORKLOADS),
        ),
        ServerConfig(
            "uvicorn-w2", "2 uvicorn --workers 2", f"{_UVICORN} --workers 2", APP_WORKLOADS
        ),
        ServerConfig(
            "gunicorn-asgi",
            "3 gunicorn -k asgi (native ASGI worker), 2 workers",
            f"{_GUNICORN} -k asgi",
            APP_WORKLOADS,
        ),
        ServerConfig(
            "granian",
            "3g granian --interface asgi --workers 2",
            _GRANIAN,
            APP_WORKLOADS,
        ),
        ServerConfig("uvicorn-1", "4 uvicorn, one process", _UVICORN, APP_WORKLOADS, workers=1),
        ServerConfig(
            "floor-asyncpg",
            "5a floor: bare ASGI + asyncpg prepared statement, 2 workers",
            _FLOOR,
            env={"FLOOR_MODE": "asyncpg"},
            cwd=BENCH_DIR,
        ),
        ServerConfig(
            "floor-static",
            "5b floor: bare ASGI, static JSON, 2 workers",
            _FLOOR,
            env={"FLOOR_MODE": "static"},
            cwd=BENCH_DIR,
        ),
        ServerConfig(
            "gunicorn-nometrics",
            "1m config 1 with METRICS_ENABLED=false and ACCESS_LOG=false",
            _GUNICORN,
            env={"METRICS_ENABLED": "false", "ACCESS_LOG": "false"},
        ),
        ServerConfig(
            "gunicorn-1w", "1x1 config 1 with 1 worker (scaling curve)", _GUNICORN, workers=1
        ),
        ServerConfig(
            "gunicorn-4w",
            "1x4 config 1, 4 workers (scaling; /metrics scrape under load; sign-up flood)",
            _GUNICORN,
            ("read", "scrape", "flood"),
            workers=4,
        ),
    )
}
BASELINE = "gunicorn"


def candidate(spec: str) -> ServerConfig:
    """`--candidate NAME=DIR`: config 1 served from another checkout (e.g. with a tuning
    applied), so a change can be measured interleaved with the unchanged service."""
    name, _, tree = spec.partition("=")
    cwd = Path(tree).resolve()
    if not (cwd / "gunicorn.conf.py").is_file() or not (cwd / "service").is_dir():
        raise ValueError(f"{cwd} has no gunicorn.conf.py and service/")
    label = f"candidate {name}: config 1 served from {cwd}"
    workloads = ("steady", *APP_WORKLOADS)
    return replace(CONFIGS[BASELINE], key=f"cand-{name}", label=label, cwd=cwd, workloads=workloads)


class ServerFailedError(RuntimeError):
    pass


def http_get(port: int, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class RunningServer:
    config: ServerConfig
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the master's children (minus helpers such as
        multiprocessing's resource tracker), or the process itself when it has none."""
        children = children_of(self.process.pid)
        return [pid for pid in children if b"resource_tracker" not in cmdline(pid)] or [
            self.process.pid
        ]

    def wait_first_200(self) -> float:
        """Seconds from the start to the first 200 on /livez."""
        while time.monotonic() < self.started_at + READY_TIMEOUT_SECONDS:
            if self.process.poll() is not None:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
                raise ServerFailedError(
                    f"{self.config.key} exited with {self.process.returncode}; "
                    f"log: {self.log_path}\n{tail}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(self.port, "/livez", timeout=READY_TIMEOUT_SECONDS)[0] == 200:
                    return time.monotonic() - self.started_at
            time.sleep(0.01)
        self.stop()
        raise ServerFailedError(f"{self.config.key} gave no 200 on /livez within the timeout")

    def stop(self) -> None:
        stop(self.process, timeout=30)


def start_server(
    config: ServerConfig, base_env: Mapping[str, str], log_dir: Path, tag: str
) -> RunningServer:
    port = free_port()
    env = {
        **base_env,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(config.workers),
        **config.env,
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix=f"metrics-{config.key}-", dir=log_dir),
    }
    log_path = log_dir / f"{tag}-{config.key}.log"
    started_at = time.monotonic()
    # stdout carries the JSON access log (as a deployment would ship it); stderr is kept.
    # A session of its own, as every committed measurement was made (see tooling.gunicorn).
    process = launch(
        [sys.executable, *shlex.split(config.command.replace("{port}", str(port)))],
        env=env,
        log_path=log_path,
        cwd=config.cwd,
        discard_stdout=True,
        new_session=True,
    )
    return RunningServer(config, port, process, log_path, started_at)
