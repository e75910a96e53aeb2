"""The request's database connection, as one FastAPI dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core import metrics
from service.core.db import Database, commit_with_retry

T = TypeVar("T")

READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Db:
    """A pooled connection for one request: autocommit for GET/HEAD, else one transaction
    that the route commits through `commit_with_retry` before it answers (so a 2xx always
    means committed); anything left uncommitted is rolled back when the request ends."""

    connection: AsyncConnection
    retry_attempts: int

    async def commit_with_retry(self, work: Callable[[], Awaitable[T]]) -> T:
        return await commit_with_retry(
            self.connection,
            work,
            on_retry=metrics.record_db_retry,
            attempts=self.retry_attempts,
        )


def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


# async, like every dependency here: FastAPI runs a plain `def` one in a worker thread.
async def get_database(request: Request) -> Database:
    """For routes that must not hold a connection while they work (bcrypt)."""
    return database_of(request)


async def get_db(request: Request) -> AsyncIterator[Db]:
    database = database_of(request)
    read_only = request.method in READ_ONLY_METHODS
    async with database.connect(read_only=read_only) as connection:
        yield Db(connection, database.retry_attempts)


DatabaseDep = Annotated[Database, Depends(get_database)]
DbDep = Annotated[Db, Depends(get_db)]
