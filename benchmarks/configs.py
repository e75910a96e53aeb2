"""The server configurations under test: how each one is started, and what it runs."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.common import BENCH_DIR, PROJECT_ROOT

_PY = sys.executable
_GUNICORN = [_PY, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
_FLOOR_GUNICORN = [_PY, "-m", "gunicorn", "-c", str(BENCH_DIR / "floor_gunicorn_conf.py")]
_UVICORN = [
    _PY,
    "-m",
    "uvicorn",
    "--factory",
    "service.app:create_app",
    "--host",
    "127.0.0.1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--lifespan",
    "on",
    "--no-access-log",
    "--timeout-keep-alive",
    "5",
    "--log-config",
    str(BENCH_DIR / "uvicorn_logging.json"),
]
_GRANIAN = [
    _PY,
    "-m",
    "granian",
    "--interface",
    "asgi",
    "--factory",
    "--host",
    "127.0.0.1",
    "--loop",
    "uvloop",
    "--no-access-log",
    "--log-config",
    str(BENCH_DIR / "uvicorn_logging.json"),
]
APP_WORKLOADS = ("read", "user", "insert", "list", "signup")
# Read at other connection counts, for the scaling curve (50 is `read` itself).
SCALING_WORKLOADS = ("c10", "c200", "c1000")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    key: str
    label: str
    workers: int
    base_command: tuple[str, ...]
    workloads: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    # uvicorn takes the port on its command line; gunicorn reads BIND from the environment.
    port_flag: bool = False
    is_service: bool = True
    cwd: Path = PROJECT_ROOT
    app_argument: tuple[str, ...] = ()  # after the port (granian takes the app last)

    def command(self, port: int) -> list[str]:
        command = list(self.base_command)
        if self.port_flag:
            command += ["--port", str(port)]
        return command + list(self.app_argument)

    def environment(self, port: int) -> dict[str, str]:
        return {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(self.workers), **self.env}


CONFIGS: dict[str, ServerConfig] = {
    config.key: config
    for config in (
        ServerConfig(
            key="gunicorn",
            label="1 gunicorn -c gunicorn.conf.py, 2 workers (this deployment)",
            workers=2,
            base_command=tuple(_GUNICORN),
            workloads=("steady", *APP_WORKLOADS, *SCALING_WORKLOADS),
        ),
        ServerConfig(
            key="uvicorn-w2",
            label="2 uvicorn --workers 2",
            workers=2,
            base_command=(*_UVICORN, "--workers", "2"),
            workloads=APP_WORKLOADS,
            port_flag=True,
        ),
        ServerConfig(
            key="gunicorn-asgi",
            label="3 gunicorn -k asgi (native ASGI worker), 2 workers",
            workers=2,
            base_command=(*_GUNICORN, "-k", "asgi"),
            workloads=APP_WORKLOADS,
        ),
        ServerConfig(
            key="granian",
            label="3g granian --interface asgi --workers 2",
            workers=2,
            base_command=(*_GRANIAN, "--workers", "2"),
            workloads=APP_WORKLOADS,
            port_flag=True,
            app_argument=("service.app:create_app",),
        ),
        ServerConfig(
            key="uvicorn-1",
            label="4 uvicorn, one process",
            workers=1,
            base_command=tuple(_UVICORN),
            workloads=APP_WORKLOADS,
            port_flag=True,
        ),
        ServerConfig(
            key="floor-asyncpg",
            label="5a floor: bare ASGI + asyncpg prepared statement, 2 workers",
            workers=2,
            base_command=tuple(_FLOOR_GUNICORN),
            workloads=("read",),
            env={"FLOOR_MODE": "asyncpg"},
            is_service=False,
        ),
        ServerConfig(
            key="floor-static",
            label="5b floor: bare ASGI, static JSON, 2 workers",
            workers=2,
            base_command=tuple(_FLOOR_GUNICORN),
            workloads=("read",),
            env={"FLOOR_MODE": "static"},
            is_service=False,
        ),
        ServerConfig(
            key="gunicorn-nometrics",
            label="1m config 1 with METRICS_ENABLED=false and ACCESS_LOG=false",
            workers=2,
            base_command=tuple(_GUNICORN),
            workloads=("read",),
            env={"METRICS_ENABLED": "false", "ACCESS_LOG": "false"},
        ),
        ServerConfig(
            key="gunicorn-1w",
            label="1x1 config 1 with 1 worker (scaling curve)",
            workers=1,
            base_command=tuple(_GUNICORN),
            workloads=("read",),
        ),
        ServerConfig(
            key="gunicorn-4w",
            label="1x4 config 1, 4 workers (scaling; /metrics scrape under load; sign-up flood)",
            workers=4,
            base_command=tuple(_GUNICORN),
            workloads=("read", "scrape", "flood"),
        ),
    )
}
BASELINE = "gunicorn"


def candidate(name: str, source_tree: Path) -> ServerConfig:
    """Config 1 served from another checkout (e.g. with a tuning applied), so a change can
    be measured interleaved with the unchanged service: `--candidate NAME=DIR`."""
    tree = source_tree.resolve()
    if not (tree / "gunicorn.conf.py").is_file() or not (tree / "service").is_dir():
        raise ValueError(f"{tree} has no gunicorn.conf.py and service/")
    return replace(
        CONFIGS[BASELINE],
        key=f"cand-{name}",
        label=f"candidate {name}: config 1 served from {tree}",
        cwd=tree,
        workloads=("steady", *APP_WORKLOADS),
    )
