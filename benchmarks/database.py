"""The benchmark database: an embedded PostgreSQL in .pgdata/bench with a fresh `bench`
database (default), or the caller's DATABASE_URL as is. Also counts new sessions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg

from benchmarks.common import PROJECT_ROOT, say
from tooling.database import drop_statement, execute, fetch_value, migrate, with_database
from tooling.postgres import EmbeddedPostgres

BENCH_DATA_DIR = PROJECT_ROOT / ".pgdata" / "bench"
BENCH_DATABASE = "bench"


@dataclass
class BenchDatabase:
    url: str
    name: str
    # Where session counts are read from: another database, so reading them opens no
    # session in the one being measured.
    monitor_url: str
    embedded: EmbeddedPostgres | None = None
    server_version: str = field(default="", init=False)
    server_version_num: int = field(default=0, init=False)

    @classmethod
    def provide(cls) -> BenchDatabase:
        configured = os.environ.get("DATABASE_URL")
        if configured:
            say("using DATABASE_URL from the environment (data is added, nothing is dropped)")
            name = urlsplit(configured).path.lstrip("/") or "postgres"
            monitor = with_database(configured, "postgres" if name != "postgres" else "template1")
            return cls(url=configured, name=name, monitor_url=monitor)
        server = EmbeddedPostgres(BENCH_DATA_DIR, log=say)
        server.start()
        execute(
            server.url("postgres"),
            drop_statement(BENCH_DATABASE),
            f'CREATE DATABASE "{BENCH_DATABASE}"',
        )
        say(f"fresh database {BENCH_DATABASE!r} on the embedded PostgreSQL")
        return cls(
            url=server.url(BENCH_DATABASE),
            name=BENCH_DATABASE,
            monitor_url=server.url("postgres"),
            embedded=server,
        )

    def migrate(self) -> None:
        say("alembic upgrade head")
        migrate(self.url)
        self.server_version = str(fetch_value(self.url, "SHOW server_version"))
        self.server_version_num = int(str(fetch_value(self.url, "SHOW server_version_num")))

    def analyze(self) -> None:
        execute(self.url, "ANALYZE")

    def sessions(self) -> int | None:
        """pg_stat_database.sessions (PostgreSQL 14+): sessions ever opened to this database.
        Backends flush this counter within about a second of going idle."""
        if self.server_version_num < 140000:
            return None
        try:
            value = fetch_value(
                self.monitor_url,
                "SELECT sessions FROM pg_stat_database WHERE datname = $1",
                self.name,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            say(f"could not read pg_stat_database: {exc!r}")
            return None
        return None if value is None else int(str(value))

    def postmaster_pid(self) -> int | None:
        """The embedded server's postmaster (its CPU is measured); None for DATABASE_URL."""
        return None if self.embedded is None else self.embedded.postmaster_pid()

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop_if_started_here()
