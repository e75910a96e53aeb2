"""Checkouts are served first come, first served, through Database.connect (no SQLAlchemy
internal is subclassed for it: an asyncio.Semaphore, FIFO since Python 3.11.1, admits at
most as many checkouts as the pool holds, so the pool never has a queue of its own)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.core.db import Database
from tests.conftest import make_settings

WAIT_BOUND_SECONDS = 20


async def test_no_checkout_overtakes_one_that_waited_longer(database_url: str) -> None:
    """SQLAlchemy's asyncio queue hands a just-returned connection to whichever checkout
    runs first, and a woken waiter that lost the race queues again at the back: under load
    that starved some requests for seconds. 20 tasks x 30 checkouts on a pool of 2: each
    takes a ticket as it starts waiting; with checkouts in arrival order no ticket is served
    after more than one later ticket (two connections may finish opening in either order).
    Against the bare pool (no turns) this saw up to 51 overtakes, in 4 runs of 5."""
    pool_size = 2
    settings = make_settings(database_url, db_pool_size=pool_size, db_max_overflow=0)
    database = Database.create(settings)
    tickets = itertools.count()
    served: list[int] = []

    async def client() -> None:
        for _ in range(30):
            ticket = next(tickets)
            async with database.connect(read_only=True) as connection:
                served.append(ticket)
                await connection.execute(text("SELECT 1"))

    async def open_one(ready: asyncio.Barrier) -> None:
        async with database.connect(read_only=True) as connection:
            await connection.execute(text("SELECT 1"))
            await ready.wait()

    try:
        async with asyncio.timeout(WAIT_BOUND_SECONDS):
            # Fill the pool first: a checkout that opens a connection (~30 ms) is rightly
            # overtaken by those that reuse the other one meanwhile.
            ready = asyncio.Barrier(pool_size)
            await asyncio.gather(*(open_one(ready) for _ in range(pool_size)))
            await asyncio.gather(*(client() for _ in range(20)))
    finally:
        await database.dispose()
    position = {ticket: index for index, ticket in enumerate(served)}
    overtakes = {
        ticket: sum(1 for earlier in served[: position[ticket]] if earlier > ticket)
        for ticket in served
    }
    worst = max(overtakes, key=overtakes.__getitem__)
    assert overtakes[worst] <= pool_size - 1, (
        f"ticket {worst} was served after {overtakes[worst]} later tickets"
    )


async def test_waiting_past_the_pool_timeout_raises_the_pool_timeout(database_url: str) -> None:
    settings = make_settings(
        database_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_seconds=0.3
    )
    database = Database.create(settings)
    try:
        async with database.connect(read_only=True):
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError):
                async with database.connect(read_only=True):
                    pass
            waited = time.monotonic() - started
        assert 0.25 < waited < 2.5, f"waited {waited:.2f} s for a 0.3 s pool timeout"
        async with database.connect(read_only=True) as connection:  # the turn was given back
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await database.dispose()
