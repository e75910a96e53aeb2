"""Engine, sessions and the retrying unit of work. Built per process, inside the app lifespan."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, NullPool
from sqlalchemy.util import await_, memoized_property
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

from service.core.metrics import DB_CHECKOUT_WAIT
from service.core.settings import Settings

T = TypeVar("T")

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
RETRYABLE_SQLSTATES = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})
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


class FairAsyncAdaptedQueue(AsyncAdaptedQueue[ConnectionPoolEntry]):
    """Hands returned connections to waiting checkouts in arrival order.

    SQLAlchemy's asyncio queue lets a new checkout take a connection that was just returned
    for a waiter that has not run yet (the waiter then queues again at the back). Under load
    that starves some requests for seconds while others never wait. A FIFO semaphore that
    counts idle connections makes every checkout queue behind the ones already waiting."""

    @memoized_property
    def _idle(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(0)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        super().put_nowait(item)
        self._idle.release()

    def get_nowait(self) -> ConnectionPoolEntry:
        if self._idle.locked():
            raise Empty()
        await_(self._idle.acquire())  # returns at once: the semaphore is not locked
        return super().get_nowait()

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if not block:
            return self.get_nowait()
        try:
            await_(asyncio.wait_for(self._idle.acquire(), timeout))
        except TimeoutError as exc:
            raise Empty() from exc
        return super().get_nowait()


class TimedQueuePool(AsyncAdaptedQueuePool):
    """Records how long each checkout waited; pool events only see the connection after.
    Checkouts are served first come, first served (FairAsyncAdaptedQueue)."""

    _queue_class = FairAsyncAdaptedQueue

    def _do_get(self) -> ConnectionPoolEntry:
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            DB_CHECKOUT_WAIT.observe(time.perf_counter() - started)


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
        "poolclass": TimedQueuePool,
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
    sessionmaker: async_sessionmaker[AsyncSession]
    # GET/HEAD read in autocommit: no BEGIN and ROLLBACK round trips. Under READ COMMITTED
    # every statement takes its own snapshot anyway, so what a read can see is unchanged.
    read_sessionmaker: async_sessionmaker[AsyncSession]
    retry_attempts: int

    @classmethod
    def create(cls, settings: Settings) -> Database:
        engine = build_engine(settings)
        return cls(
            engine=engine,
            sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
            read_sessionmaker=async_sessionmaker(
                engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
            ),
            retry_attempts=settings.db_retry_attempts,
        )

    async def ping(self, *, within_seconds: float) -> None:
        async with asyncio.timeout(within_seconds), self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


async def get_database(request: Request) -> Database:
    # async: FastAPI runs a plain `def` dependency in a worker thread, once per request.
    database: Database = request.app.state.database
    return database


async def get_session(
    request: Request,
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One session per request. Writes commit through `commit_with_retry` before the route
    returns, so a 2xx is only ever sent for committed work; anything left is rolled back."""
    safe = request.method in {"GET", "HEAD"}
    async with (database.read_sessionmaker if safe else database.sessionmaker)() as session:
        session.info["retry_attempts"] = database.retry_attempts
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def commit_with_retry(
    session: AsyncSession,
    work: Callable[[], Awaitable[T]],
    *,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run `work` and commit; on a serialization failure or deadlock, roll back and run it
    again (bounded, with jittered backoff). Raises RetriesExhaustedError past the bound."""
    attempts: int = session.info.get("retry_attempts", 3)
    for attempt in range(1, attempts + 1):
        try:
            result = await work()
            await session.commit()
            return result
        except DBAPIError as exc:
            await session.rollback()
            state = sqlstate_of(exc)
            if state not in RETRYABLE_SQLSTATES:
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
            await session.rollback()
            raise
    raise AssertionError("unreachable")  # pragma: no cover
