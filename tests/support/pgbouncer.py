"""A real PgBouncer (Debian's package) on loopback, configured from deploy/pgbouncer/.

The repository's pgbouncer.ini is the one docker-compose runs; a test keeps its pool
settings (pool_mode, pool sizes, connect_query, ignored startup parameters) and changes
only what must differ on this machine: where to listen, where PostgreSQL is, files, auth.
"""

from __future__ import annotations

import configparser
import os
import pwd
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.system import require_binary
from tooling.gunicorn import stop
from tooling.postgres import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REPO_CONFIG = PROJECT_ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini"
# The compose file's database entry: its options other than where the server is apply here.
COMPOSE_DATABASE = "app"
_LOCATION_KEYS = {"host", "port", "dbname", "user", "password"}
# Debian's pgbouncer exits "User does not exist" or refuses root: run it as nobody.
UNPRIVILEGED_USER = "nobody"


def read_repo_config(path: Path = REPO_CONFIG) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def database_options(entry: str) -> dict[str, str]:
    """`host=x port=5432 connect_query='SET a = 1'` as a dict (libpq-style quoting)."""
    options = {}
    for token in shlex.split(entry):
        key, _, value = token.partition("=")
        options[key] = value
    return options


def _render_options(options: dict[str, str]) -> str:
    return " ".join(
        f"{key}='{value}'" if " " in value else f"{key}={value}" for key, value in options.items()
    )


@dataclass(frozen=True)
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    config: configparser.RawConfigParser
    log_path: Path

    def url_for(self, database_url: str) -> str:
        """The same database and user, reached through PgBouncer."""
        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def setting(self, key: str) -> str:
        return self.config.get("pgbouncer", key)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = (log_path.parent / "stderr.log").read_text(errors="replace")
            raise RuntimeError(
                f"pgbouncer exited with {process.returncode}:\n{stderr}\n"
                f"{log_path.read_text(errors='replace')}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"pgbouncer did not listen on {port}:\n{log_path.read_text()}")


@contextmanager
def run_pgbouncer(server_url: str, **overrides: str) -> Iterator[PgBouncer]:
    """PgBouncer in front of the PostgreSQL server at `server_url` (any database on it).

    Clients authenticate with `trust` on loopback; PgBouncer logs in to PostgreSQL as the
    URL's user (with its password, if any)."""
    binary = require_binary("pgbouncer", "pgbouncer")
    server = make_url(server_url)
    config = read_repo_config()
    repo_entry = database_options(config.get("databases", COMPOSE_DATABASE))
    kept = {key: value for key, value in repo_entry.items() if key not in _LOCATION_KEYS}
    user = server.username or "postgres"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pgbouncer-test-") as scratch:
        directory = Path(scratch)
        userlist = directory / "userlist.txt"
        userlist.write_text(f'"{user}" "{server.password or ""}"\n')
        log_path = directory / "pgbouncer.log"
        location = {
            "host": server.host or "127.0.0.1",
            "port": str(server.port or 5432),
            "user": user,
            **({"password": server.password} if server.password else {}),
        }
        # `*`: every database on the server, so each test session's own database works.
        config.remove_section("databases")
        config.add_section("databases")
        config.set("databases", "*", _render_options({**location, **kept}))
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(userlist),
            "admin_users": user,
            "logfile": str(log_path),
            "pidfile": str(directory / "pgbouncer.pid"),
            **overrides,
        }
        for key, value in settings.items():
            config.set("pgbouncer", key, value)
        config_path = directory / "pgbouncer.ini"
        with config_path.open("w") as handle:
            config.write(handle)
        log_path.touch()
        command = [binary, str(config_path)]
        if os.geteuid() == 0:
            account = pwd.getpwnam(UNPRIVILEGED_USER)
            for path in (directory, userlist, config_path, log_path):
                os.chown(path, account.pw_uid, account.pw_gid)
            command[1:1] = ["-u", UNPRIVILEGED_USER]
        # Errors before the logfile opens (a bad config) only reach stderr: keep those too.
        with (directory / "stderr.log").open("wb") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, cwd=directory
            )
        try:
            _wait_listening(process, port, log_path)
            yield PgBouncer(process, port, config, log_path)
        finally:
            stop(process, timeout=10)
