"""The deployment under test: `gunicorn -c gunicorn.conf.py`, started the way users start it,
bound to loopback, with its own metrics directory; stopped with SIGTERM afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.metrics import Snapshot, scrape
from tooling.postgres import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BOOT_TIMEOUT_SECONDS = 60.0


@dataclass
class Deployment:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_ready(url: str, workers: int | None, *, timeout: float) -> Snapshot:
    """Until /readyz answers 200 and `workers` workers have built their pool (each sets its
    slot's db_pool_size gauge in its lifespan). Returns the last /metrics snapshot."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if http.get("/readyz").status_code == 200:
                    snapshot = scrape(http)
                    if workers is None or len(snapshot.live_slots) >= workers:
                        return snapshot
                    last_error = f"{len(snapshot.live_slots)} of {workers} workers booted"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {last_error}")


@contextlib.contextmanager
def gunicorn(
    database_url: str, *, workers: int, log_path: Path, env: dict[str, str]
) -> Iterator[Deployment]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="loadtest-metrics-") as metrics_dir:
        full_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PROMETHEUS_", "SERVICE_"))
        }
        full_env.update(
            DATABASE_URL=database_url,
            BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY=str(workers),
            PROMETHEUS_MULTIPROC_DIR=metrics_dir,
            ACCESS_LOG="false",
            LOG_LEVEL="info",
        )
        full_env.update(env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=PROJECT_ROOT,
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deployment = Deployment(process, f"http://127.0.0.1:{port}", log_path)
        try:
            yield deployment
        finally:
            deployment.stop()
