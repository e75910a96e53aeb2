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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.system import require_binary
from tooling.gunicorn import launch, stop, wait_for
from tooling.postgres import PROJECT_ROOT, free_port

# Debian's pgbouncer exits "User does not exist" or refuses root: run it as nobody.
UNPRIVILEGED_USER = "nobody"


def read_repo_config() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PROJECT_ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini")
    return parser


def database_options(entry: str) -> dict[str, str]:
    """`host=x port=5432 connect_query='SET a = 1'` as a dict (libpq-style quoting)."""
    return dict(token.partition("=")[::2] for token in shlex.split(entry))


@dataclass(frozen=True)
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    config: configparser.RawConfigParser
    log_path: Path

    def url_for(self, database_url: str) -> str:
        """The same database and user, reached through PgBouncer."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def setting(self, key: str) -> str:
        return self.config.get("pgbouncer", key)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _listening(process: subprocess.Popen[bytes], port: int, output: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{output.read_text()}")
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def run_pgbouncer(server_url: str, **overrides: str) -> Iterator[PgBouncer]:
    """PgBouncer in front of the PostgreSQL server at `server_url` (any database on it).

    Clients authenticate with `trust` on loopback; PgBouncer logs in to PostgreSQL as the
    URL's user (with its password, if any)."""
    binary = require_binary("pgbouncer", "pgbouncer")
    server = make_url(server_url)
    config = read_repo_config()
    user = server.username or "postgres"
    # The compose file's database entry, pointed at `server`: its other options apply here.
    options = database_options(config.get("databases", "app"))
    options.update(host=server.host or "127.0.0.1", port=str(server.port or 5432), user=user)
    options.pop("dbname", None)
    if server.password:
        options["password"] = server.password
    entry = " ".join(f"{key}={shlex.quote(value)}" for key, value in options.items())
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pgbouncer-test-") as scratch:
        directory = Path(scratch)
        userlist, log_path = directory / "userlist.txt", directory / "pgbouncer.log"
        config_path, output = directory / "pgbouncer.ini", directory / "stderr.log"
        userlist.write_text(f'"{user}" "{server.password or ""}"\n')
        log_path.touch()
        # `*`: every database on the server, so each test session's own database works.
        config["databases"] = {"*": entry}
        config["pgbouncer"].update(
            listen_addr="127.0.0.1",
            listen_port=str(port),
            unix_socket_dir="",
            auth_type="trust",
            auth_file=str(userlist),
            admin_users=user,
            logfile=str(log_path),
            pidfile=str(directory / "pgbouncer.pid"),
            **overrides,
        )
        with config_path.open("w") as handle:
            config.write(handle)
        command = [binary, str(config_path)]
        if os.geteuid() == 0:
            account = pwd.getpwnam(UNPRIVILEGED_USER)
            for path in (directory, userlist, config_path, log_path):
                os.chown(path, account.pw_uid, account.pw_gid)
            command[1:1] = ["-u", UNPRIVILEGED_USER]
        # Errors before the logfile opens (a bad config) only reach stderr: keep those too.
        process = launch(command, env=os.environ, log_path=output, cwd=directory)
        try:
            wait_for(
                lambda: _listening(process, port, output),
                timeout=15,
                what=f"pgbouncer listening on {port}",
                seen=log_path.read_text,
            )
            yield PgBouncer(process, port, config, log_path)
        finally:
            stop(process, timeout=10)
