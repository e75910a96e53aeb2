"""Real gunicorn processes on loopback, started the way users start them
(`gunicorn -c gunicorn.conf.py` from the project root), for the tests, the load-test proof
and the benchmarks; `launch`/`stop` also start and stop every other child process of the
tooling (the benchmarks' other servers, Locust, PgBouncer, podman's API service), and
`wait_for` is the one bounded wait."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tooling.postgres import PROJECT_ROOT, free_port
from tooling.processes import children_of, children_with_state, cmdline

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
_STARTUP_COMPLETE = re.compile(r"\[(\d+)\] \[INFO\] uvicorn\.error: Application startup complete")


def wait_for(
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str,
    seen: Callable[[], object] | None = None,
) -> None:
    """Poll `predicate` until true; on timeout say what was awaited and, with `seen`, what
    the last look found."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    last = "" if seen is None else f"; last saw: {seen()}"
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{last}")


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    metrics_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Workers are forks of the master: same command line (unlike helper processes)."""
        own = cmdline(self.pid)
        return [pid for pid in children_of(self.pid) if cmdline(pid) == own]

    def process_table(self) -> str:
        """For failure messages: the master's state and each child's, and which booted."""
        code = self.process.poll()
        master = "up" if code is None else f"exited {code}"
        own, booted = cmdline(self.pid), self.booted_pids()
        children = [
            f"{pid}:{state}"
            + ("" if cmdline(pid) == own else ":other")
            + (":booted" if pid in booted else "")
            for pid, state in children_with_state(self.pid).items()
        ]
        return f"master {self.pid} {master}; children {children or 'none'}"

    def booted_pids(self) -> set[int]:
        """Every pid that ever logged a finished application startup (dead ones too)."""
        return {int(pid) for pid in _STARTUP_COMPLETE.findall(self.log())}

    def booted_workers(self) -> list[int]:
        """Live workers that finished booting (a booting one accepts no connection yet)."""
        booted = self.booted_pids()
        return [pid for pid in self.worker_pids() if pid in booted]

    def wait_booted(self, workers: int) -> None:
        def ready() -> bool:
            return len(self.worker_pids()) == len(self.booted_workers()) == workers

        try:
            wait_for(ready, timeout=60, what=f"{workers} booted workers", seen=self.process_table)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\ngunicorn's log:\n{self.log()[-4000:]}") from None


def launch(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path = PROJECT_ROOT,
    discard_stdout: bool = False,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own (so `stop` can end all it started), its
    output written to `log_path` (only stderr with `discard_stdout`, e.g. a JSON access log).

    It stays in the caller's session unless `new_session`: with the kernel's autogroup
    scheduling, a session of its own would get one fair share of the CPU against the load
    generator's, not one per process, and the same load would measure slower."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if discard_stdout else log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
            process_group=None if new_session else 0,
        )


def stop(process: subprocess.Popen[bytes], *, timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL to the server's process group if it or a child lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait(timeout)


def gunicorn_env(
    database_url: str, port: int, metrics_dir: Path, **overrides: str
) -> dict[str, str]:
    """This environment without the service's own settings, plus the database, a loopback
    port, a metrics directory of its own and `overrides`."""
    own = ("PROMETHEUS_", "SERVICE_", "WEB_CONCURRENCY", "DB_")
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(own)},
        "DATABASE_URL": database_url,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "4",
        "LOG_LEVEL": "info",
        "ACCESS_LOG": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        **overrides,
    }


@contextmanager
def run_gunicorn(
    database_url: str,
    *,
    workers: int = 4,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[Gunicorn]:
    """Start `gunicorn -c gunicorn.conf.py` from the project root (its log in `log_path`,
    else a scratch file), by default until its workers booted; stop it on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gunicorn-") as scratch:
        metrics_dir = Path(scratch) / "metrics"
        log_path = log_path or Path(scratch) / "gunicorn.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = gunicorn_env(
            database_url, port, metrics_dir, WEB_CONCURRENCY=str(workers), **dict(env or {})
        )
        process = launch([GUNICORN, "-c", "gunicorn.conf.py"], env=full_env, log_path=log_path)
        server = Gunicorn(process, port, log_path, metrics_dir)
        try:
            if wait:
                server.wait_booted(workers)
            yield server
        finally:
            stop(process)
