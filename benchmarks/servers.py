"""Start a configuration as a child process, time it to its first 200, find its workers,
and stop it (SIGTERM, then SIGKILL to its own process group if it lingers)."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.configs import ServerConfig
from tooling.gunicorn import launch, stop
from tooling.postgres import free_port
from tooling.processes import children_of, cmdline, rss_mb

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.01


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
    start_to_first_200_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the master's children (minus helpers such as
        multiprocessing's resource tracker), or the process itself when it has none."""
        children = [
            pid for pid in children_of(self.process.pid) if b"resource_tracker" not in cmdline(pid)
        ]
        return children or [self.process.pid]

    def worker_rss_mb(self) -> list[float]:
        return [rss for pid in self.worker_pids() if (rss := rss_mb(pid)) is not None]

    def wait_first_200(self, path: str = "/livez") -> float:
        deadline = self.started_at + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailedError(
                    f"{self.config.key} exited with {self.process.returncode}; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_get(self.port, path, timeout=READY_TIMEOUT_SECONDS)
                if status == 200:
                    self.start_to_first_200_s = time.monotonic() - self.started_at
                    return self.start_to_first_200_s
            time.sleep(_POLL_SECONDS)
        self.stop()
        raise ServerFailedError(f"{self.config.key} gave no 200 on {path} within the timeout")

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        stop(self.process, timeout=STOP_TIMEOUT_SECONDS)


def start_server(
    config: ServerConfig, base_env: Mapping[str, str], log_dir: Path, tag: str
) -> RunningServer:
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix=f"metrics-{config.key}-", dir=log_dir)
    env = {
        **base_env,
        **config.environment(port),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    log_path = log_dir / f"{tag}-{config.key}.log"
    started_at = time.monotonic()
    # stdout carries the JSON access log (as a deployment would ship it); stderr is kept.
    # A session of its own, as every committed measurement was made (see tooling.gunicorn).
    process = launch(
        config.command(port),
        env=env,
        log_path=log_path,
        cwd=config.cwd,
        discard_stdout=True,
        new_session=True,
    )
    return RunningServer(config, port, process, log_path, started_at)
