"""The service behind a real PgBouncer in transaction mode (deploy/pgbouncer/pgbouncer.ini),
on loopback in front of the test PostgreSQL: DB_PGBOUNCER=true is all the service needs.

PgBouncer's server pool is made deliberately small here (SERVER_POOL), far below what the
gunicorn workers' pools open as clients, so every worker's transactions really do share
server connections, in turn and in any order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from service.core.db import build_engine
from service.core.settings import Settings
from service.core.urls import plain_dsn
from tests.support.pgbouncer import PgBouncer, run_pgbouncer
from tests.support.processes import TEST_ENV, one_response_from_each_worker
from tests.support.traffic import Client, Crossing, Traffic, crossing_batches, item_journey
from tests.support.traffic import unique_prefix as _unique_prefix
from tooling.database import fetch, fresh_database
from tooling.gunicorn import run_gunicorn, wait_for
from tooling.metrics import Samples, read_samples

pytestmark = pytest.mark.gunicorn

SERVER_POOL = 6
# Every worker's transactions queue for SERVER_POOL server connections, so on a busy machine
# a request may wait seconds for its turn. The product's fail-fast limits (3 s pool timeout,
# 10 s command timeout, PgBouncer's query_wait_timeout of 5 s) turn such a wait into a 503
# (seen: "reason": "pool_timeout"). These tests check that nothing is lost, duplicated or
# mixed up, so they wait instead.
PATIENT_SECONDS = 45
BOUNCED = {
    "DB_PGBOUNCER": "true",
    "DB_POOL_SIZE": "10",
    "DB_POOL_TIMEOUT_SECONDS": str(PATIENT_SECONDS),
    # A query waiting for a server connection is, to asyncpg, a query still running.
    "DB_COMMAND_TIMEOUT_SECONDS": str(PATIENT_SECONDS),
}


@pytest.fixture(scope="module")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """This module's own migrated database: the only backends in it are PgBouncer's
    server connections (and the checks' own), so they can be counted."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def bouncer(postgres_server_url: str) -> Iterator[PgBouncer]:
    with run_pgbouncer(
        postgres_server_url,
        default_pool_size=str(SERVER_POOL),
        reserve_pool_size="0",
        query_wait_timeout=str(PATIENT_SECONDS),
    ) as running:
        assert running.setting("pool_mode") == "transaction"
        yield running


# --- helpers -----------------------------------------------------------------------------
class ServerConnections:
    """Polls pg_stat_activity: the server connections PgBouncer holds to the database.

    Only client backends count: an autovacuum worker also shows this database's name, and
    PostgreSQL starts one whenever enough rows have changed (earlier tests in this module
    write thousands), at a moment no test controls."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.peak = 0
        self.at_peak: list[str] = []
        self.others: Counter[str] = Counter()  # polls that saw another kind of backend
        self.stop = asyncio.Event()

    async def run(self) -> None:
        connection = await asyncpg.connect(plain_dsn(self.database_url))
        try:
            while not self.stop.is_set():
                backends = await connection.fetch(
                    "SELECT pid, backend_type, state, application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                clients = [row for row in backends if row["backend_type"] == "client backend"]
                self.others.update({row["backend_type"] for row in backends} - {"client backend"})
                if len(clients) > self.peak:
                    self.peak = len(clients)
                    self.at_peak = [str(tuple(row.values())) for row in backends]
                await asyncio.sleep(0.05)
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def watching_server_connections(database_url: str) -> AsyncIterator[ServerConnections]:
    watcher = ServerConnections(database_url)
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        watcher.stop.set()
        await task


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(base + "/metrics")
    assert response.status_code == 200
    return read_samples(response.text)


def requests_by_route(samples: Samples) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for labels, value in samples["http_requests_total"].items():
        found = dict(labels)
        if found["route"] != "/metrics" and value:
            counts[(found["method"], found["route"], found["status"])] = int(value)
    return counts


async def assert_rows_match(database_url: str, prefix: str, traffic: Traffic) -> int:
    """Every user and item the clients saw committed is in PostgreSQL, with an `added` a
    client was acknowledged; nothing deleted and nothing else under this prefix. Returns
    the item count."""
    found = await fetch(
        database_url,
        "SELECT u.pubid::text AS owner, i.pubid::text AS pubid, i.added FROM users u "
        "LEFT JOIN items i ON i.user_id = u.id WHERE u.name LIKE $1",
        f"{prefix}-%",
    )
    writes = traffic.writes
    assert {row["owner"] for row in found} == writes.users_expected
    stored = {row["pubid"]: row for row in found if row["pubid"] is not None}
    expected = {pubid: writes.items_created[pubid] for pubid in writes.items_expected}
    assert {pubid: row["owner"] for pubid, row in stored.items()} == expected
    for (_table, pubid), values in writes.hot_values.items():
        assert stored[pubid]["added"] in {datetime.fromisoformat(v) for v in values}, pubid
    return len(stored)


async def assert_crossing_settled(database_url: str, crossing: Crossing) -> None:
    """Each group ends as one whole batch (all-or-nothing despite deadlocks and retries)."""
    found = await fetch(
        database_url,
        "SELECT pubid::text AS pubid, added FROM items WHERE pubid::text = ANY($1)",
        [pubid for group in crossing.groups for pubid in group],
    )
    added = {row["pubid"]: row["added"] for row in found}
    for n, group in enumerate(crossing.groups):
        values = {added[pubid] for pubid in group}
        allowed = {datetime.fromisoformat(crossing.stamps[(n, rev)]) for rev in (False, True)}
        assert len(values) == 1, (n, values)
        assert values <= allowed, (n, values)


async def server_connection_state(bouncer: PgBouncer, database_url: str) -> list[tuple[str, int]]:
    """(statement_timeout, named prepared statements) on each of PgBouncer's server
    connections: SERVER_POOL transactions held open at once occupy one each."""
    url = plain_dsn(bouncer.url_for(database_url))
    connections = [await asyncpg.connect(url, statement_cache_size=0) for _ in range(SERVER_POOL)]
    transactions = [connection.transaction() for connection in connections]
    state = []
    try:
        for connection, transaction in zip(connections, transactions, strict=True):
            await transaction.start()
            state.append(
                (
                    await connection.fetchval("SHOW statement_timeout"),
                    await connection.fetchval("SELECT count(*) FROM pg_prepared_statements"),
                )
            )
    finally:
        for connection, transaction in zip(connections, transactions, strict=True):
            with contextlib.suppress(asyncpg.PostgresError):
                await transaction.rollback()
            await connection.close()
    return state


async def run_engine_traffic(url: str) -> int:
    """The service's own engine (DB_PGBOUNCER=true), 12 concurrent sessions on 8 pooled
    client connections multiplexed onto SERVER_POOL server connections."""
    settings = Settings(database_url=url, environment="test", db_pgbouncer=True, db_pool_size=8)
    engine = build_engine(settings)
    answered = 0
    try:

        async def session(number: int) -> None:
            nonlocal answered
            for step in range(40):
                async with engine.connect() as connection:
                    value = await connection.scalar(
                        text("SELECT CAST(:a AS int) * 1000 + CAST(:b AS int)"),
                        {"a": number, "b": step},
                    )
                    await connection.commit()
                assert value == number * 1000 + step
                answered += 1

        await asyncio.gather(*(session(number) for number in range(12)))
    finally:
        await engine.dispose()
    return answered


# --- tests -------------------------------------------------------------------------------
async def test_bounced_engine_gets_statement_timeout_from_connect_query(
    postgres_server_url: str, database_url: str
) -> None:
    """DB_PGBOUNCER drops the statement_timeout startup parameter (PgBouncer refuses it);
    the repo's pgbouncer.ini sets it on every server connection instead."""
    with run_pgbouncer(
        postgres_server_url, default_pool_size=str(SERVER_POOL), reserve_pool_size="0"
    ) as fresh:
        answered = await run_engine_traffic(fresh.url_for(database_url))
        state = await server_connection_state(fresh, database_url)
    expected = Settings(environment="test").db_statement_timeout_ms
    assert answered == 12 * 40
    assert [timeout for timeout, _ in state] == [f"{expected // 1000}s"] * SERVER_POOL


async def test_bounced_engine_leaves_no_prepared_statements_on_server_connections(
    postgres_server_url: str, database_url: str
) -> None:
    with run_pgbouncer(
        postgres_server_url, default_pool_size=str(SERVER_POOL), reserve_pool_size="0"
    ) as fresh:
        await run_engine_traffic(fresh.url_for(database_url))
        state = await server_connection_state(fresh, database_url)
    left_behind = [count for _, count in state]
    assert left_behind == [0] * SERVER_POOL, left_behind


async def test_four_workers_through_pgbouncer_with_zero_errors(
    bouncer: PgBouncer, database_url: str
) -> None:
    prefix = _unique_prefix("pgb4")
    traffic = Traffic()
    with run_gunicorn(bouncer.url_for(database_url), workers=4, env=TEST_ENV | BOUNCED) as server:
        # Every worker's pool takes part, whichever workers the load's connections reach.
        first_reads = await one_response_from_each_worker(
            server,
            lambda http: http.get("/users", params={"limit": 1}, headers={"Connection": "close"}),
        )
        for response in first_reads.values():
            traffic.sent[(server.url, "GET", "/users", response.status_code)] += 1
        async with watching_server_connections(database_url) as servers:

            async def client(number: int) -> None:
                async with Client([server.url], traffic) as one:
                    for round_no in range(3):
                        await item_journey(one, f"{prefix}-{number}-{round_no}")

            results = await asyncio.gather(
                *(client(number) for number in range(12)),
                crossing_batches([server.url], traffic, f"{prefix}-x", groups=8, rows=10),
            )
        samples = await scrape(server.url)
        log = server.log()
    crossing = results[-1]
    assert traffic.errors == [], (traffic.errors[:5], bouncer.log()[-2000:])
    assert isinstance(crossing, Crossing)
    assert [response.status_code for response in first_reads.values()] == [200] * 4
    assert "Traceback" not in log, log[-3000:]
    items = await assert_rows_match(database_url, prefix, traffic)
    assert items == 12 * 3 * 3 + 8 * 10
    await assert_crossing_settled(database_url, crossing)
    assert requests_by_route(samples) == traffic.by_route(server.url)
    opened = sum(samples["db_connections_opened_total"].values())
    retries = sum(samples["db_errors_total"].values())
    print(
        f"{traffic.total(server.url)} requests, {opened:.0f} client connections opened by "
        f"the workers' pools, at most {servers.peak} server connections, "
        f"{retries:.0f} deadlocks retried; slowest request {traffic.slowest:.1f} s; "
        f"other backends seen: {dict(servers.others)}"
    )
    assert 0 < servers.peak <= SERVER_POOL, servers.at_peak
    assert opened > SERVER_POOL  # clients really outnumbered server connections


async def test_two_instances_share_one_database_through_pgbouncer(
    bouncer: PgBouncer, database_url: str
) -> None:
    """One load run split across two gunicorn instances (separate ports, 2 workers each),
    request by request as a round-robin proxy would: a token issued by one instance works
    on the other, each step sees the previous one's commit, and each instance's /metrics
    counts exactly what was sent to it."""
    prefix = _unique_prefix("pgb2")
    traffic = Traffic()
    url = bouncer.url_for(database_url)
    with (
        run_gunicorn(url, workers=2, env=TEST_ENV | BOUNCED) as first,
        run_gunicorn(url, workers=2, env=TEST_ENV | BOUNCED) as second,
    ):
        bases = [first.url, second.url]
        async with watching_server_connections(database_url) as servers:

            async def client(number: int) -> None:
                async with Client(bases, traffic, start=number) as one:
                    for round_no in range(2):
                        await item_journey(one, f"{prefix}-{number}-{round_no}")

            results = await asyncio.gather(
                *(client(number) for number in range(10)),
                crossing_batches(bases, traffic, f"{prefix}-x", groups=6, rows=8),
            )
        scraped = {base: await scrape(base) for base in bases}
    crossing = results[-1]
    assert traffic.errors == [], (traffic.errors[:5], bouncer.log()[-2000:])
    assert isinstance(crossing, Crossing)
    await assert_rows_match(database_url, prefix, traffic)
    await assert_crossing_settled(database_url, crossing)
    assert 0 < servers.peak <= SERVER_POOL, servers.at_peak
    for base, samples in scraped.items():
        sent = traffic.by_route(base)
        assert sent, base
        assert requests_by_route(samples) == sent, base
        assert sum(samples["worker_requests_total"].values()) == traffic.total(base)
        logins = {dict(k)["outcome"]: v for k, v in samples["auth_logins_total"].items()}
        assert logins.get("success", 0) == sent[("POST", "/auth/token", "200")]
        assert logins.get("bad_password", 0) == sent[("POST", "/auth/token", "401")]
        assert sum(samples["db_pool_size"].values()) == 2 * 10
    total_sent = sum(traffic.total(base) for base in scraped)
    users = sum(traffic.by_route(base)[("POST", "/users", "201")] for base in scraped)
    assert users == len(traffic.writes.users_created)
    print(
        f"{total_sent} requests over 2 instances "
        f"({', '.join(str(traffic.total(base)) for base in scraped)}), "
        f"at most {servers.peak} server connections; slowest request {traffic.slowest:.1f} s; "
        f"other backends seen: {dict(servers.others)}"
    )


async def test_budget_check_behind_pgbouncer_counts_server_connections_only(
    postgres_server_url: str, database_url: str
) -> None:
    """2 workers whose pools together exceed max_connections: through PgBouncer they are
    client connections sharing its few server connections, so the service must start."""
    (limit,) = await fetch(database_url, "SHOW max_connections")
    per_worker = int(limit[0]) // 2 + 1
    pool = min(per_worker, 200)
    env = {**BOUNCED, "DB_POOL_SIZE": str(pool), "DB_MAX_OVERFLOW": str(per_worker - pool)}
    with (
        run_pgbouncer(postgres_server_url) as fresh,
        run_gunicorn(
            fresh.url_for(database_url), workers=2, env=TEST_ENV | env, wait=False
        ) as server,
    ):
        wait_for(
            lambda: server.process.poll() is not None or len(server.booted_pids()) == 2,
            timeout=30,
            what="two booted workers or a refusal",
        )
        log = server.log()
        # Not started merely because the limit could not be read through PgBouncer.
        assert "could not read max_connections" not in log, log[-2000:]
        assert server.process.poll() is None, log[-2000:]
