"""Engine, pooled connections (first come, first served) and the retrying unit of work.
Built per process, inside the app lifespan."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

from sqlalchemy import Row, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from service.core import sqlstates
from service.core.metrics import DB_CHECKOUT_WAIT
from service.core.settings import Settings

T = TypeVar("T")
# A result row of any shape (Row is generic over its column types).
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

MAX_BACKOFF_SECONDS = 0.5


class RetriesExhaustedError(Exception):
    """A transaction kept failing with a retryable conflict; the client should retry later."""


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind a SQLAlchemy/asyncpg error, if there is one."""
    for candidate in (getattr(exc, "orig", None), exc.__cause__, exc):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def build_engine(settings: Settings) -> AsyncEngine:
    server_settings = {"application_name": f"service-worker-{os.getpid()}"}
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_command_timeout_seconds,
    }
    if settings.db_pgbouncer:
        # PgBouncer in transaction mode may hand each transaction a different server
        # connection, so no prepared statement may outlive its transaction. With both caches
        # off (asyncpg's here, SQLAlchemy's in the URL below), asyncpg >= 0.32 prepares
        # unnamed statements, which the next one replaces: nothing is left on PgBouncer's
        # server connections. (The unique names of SQLAlchemy's "Prepared Statement Name with
        # PGBouncer" recipe would leave one named statement per query there, measured.)
        connect_args["statement_cache_size"] = 0
    else:
        # PgBouncer refuses unknown startup parameters; direct connections get the
        # statement timeout at connect time, bounced ones from PgBouncer's connect_query
        # (deploy/pgbouncer/pgbouncer.ini) or the database role.
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    connect_args["server_settings"] = server_settings

    pool_args: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
    }
    url = settings.database_url
    if settings.db_pgbouncer:
        url += ("&" if "?" in url else "?") + "prepared_statement_cache_size=0"
    engine = create_async_engine(url, connect_args=connect_args, **pool_args)
    event.listen(engine.sync_engine, "handle_error", _drop_connections_that_timed_out)
    return engine


def _drop_connections_that_timed_out(context: ExceptionContext) -> None:
    """asyncpg's client-side command timeout leaves the connection mid-protocol. SQLAlchemy
    would send ROLLBACK on it (a second command timeout against a hung server), and on
    invalidation first tries a graceful close with its own fixed 2 s timeout. Terminate the
    driver connection now and report a disconnect, so the request fails at the configured
    timeout. Only this connection: one slow query says nothing about the rest of the pool."""
    if not isinstance(context.original_exception, TimeoutError):
        return
    context.is_disconnect = True
    context.invalidate_pool_on_disconnect = False
    if context.connection is not None and not context.connection.invalidated:
        driver_connection = context.connection.connection.driver_connection
        if driver_connection is not None:
            driver_connection.terminate()


def build_null_pool_engine(database_url: str) -> AsyncEngine:
    """A pool-less engine for one-off tools (migrations, admin checks)."""
    return create_async_engine(database_url, poolclass=NullPool)


@dataclass(frozen=True, slots=True)
class Database:
    engine: AsyncEngine
    # GET/HEAD read in autocommit: no BEGIN and ROLLBACK round trips. Under READ COMMITTED
    # every statement takes its own snapshot anyway, so what a read can see is unchanged.
    read_engine: AsyncEngine
    # First come, first served: SQLAlchemy's asyncio pool lets a new checkout take a
    # connection just returned for a waiter that has not run yet, which under load starves
    # some requests for seconds. asyncio.Semaphore is FIFO (Python >= 3.11.1) and never
    # admits more checkouts than the pool holds, so the pool itself never has a waiter.
    turns: asyncio.Semaphore
    checkout_timeout_seconds: float
    retry_attempts: int

    @classmethod
    def create(cls, settings: Settings) -> Database:
        engine = build_engine(settings)
        return cls(
            engine=engine,
            read_engine=engine.execution_options(isolation_level="AUTOCOMMIT"),
            turns=asyncio.Semaphore(settings.connections_per_worker),
            checkout_timeout_seconds=settings.db_pool_timeout_seconds,
            retry_attempts=settings.db_retry_attempts,
        )

    async def wait_for_turn(self) -> None:
        """Take a turn at the pool, in arrival order; PoolTimeoutError past the timeout."""
        started = time.perf_counter()
        if self.turns.locked():
            try:
                async with asyncio.timeout(self.checkout_timeout_seconds):
                    await self.turns.acquire()
            except TimeoutError:
                DB_CHECKOUT_WAIT.observe(time.perf_counter() - started)
                raise PoolTimeoutError(
                    f"no pooled connection free within {self.checkout_timeout_seconds} s"
                ) from None
        else:
            await self.turns.acquire()  # free: returns without suspending
        DB_CHECKOUT_WAIT.observe(time.perf_counter() - started)

    @asynccontextmanager
    async def connect(self, *, read_only: bool) -> AsyncIterator[AsyncConnection]:
        """A pooled connection, in turn. Read-only ones run in autocommit; otherwise the
        caller commits (`commit_with_retry`) and anything left is rolled back on return."""
        await self.wait_for_turn()
        try:
            async with (self.read_engine if read_only else self.engine).connect() as connection:
                yield connection
        finally:
            self.turns.release()

    async def ping(self, *, within_seconds: float) -> None:
        async with asyncio.timeout(within_seconds), self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


class UnitOfWork(Protocol):
    """What `commit_with_retry` needs: an AsyncConnection or an AsyncSession."""

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


async def commit_with_retry(
    transaction: UnitOfWork,
    work: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run `work` and commit; on a serialization failure or deadlock, roll back and run it
    again, `attempts` times at most (DB_RETRY_ATTEMPTS), with jittered backoff. Raises
    RetriesExhaustedError past the bound."""
    for attempt in range(1, attempts + 1):
        try:
            result = await work()
            await transaction.commit()
            return result
        except DBAPIError as exc:
            await transaction.rollback()
            state = sqlstate_of(exc)
            if state not in sqlstates.RETRYABLE:
                raise
            if on_retry is not None:
                on_retry(state)
            if attempt == attempts:
                raise RetriesExhaustedError(
                    f"gave up after {attempts} attempts (SQLSTATE {state})"
                ) from exc
            # Full jitter: spread the losers out so they do not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.02 * 2**attempt)))
        except Exception:
            await transaction.rollback()
            raise
    raise AssertionError("unreachable")  # pragma: no cover
