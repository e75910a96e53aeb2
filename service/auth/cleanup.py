"""Bounded growth: each worker now and then deletes ended or expired sessions and the
counters of throttling windows that are over, in small batches, off the request path."""

from __future__ import annotations

import asyncio
import logging
import random

from service.auth import sessions, throttle
from service.core.db import Database
from service.core.settings import Settings

logger = logging.getLogger("service.auth.cleanup")


async def clean_once(database: Database, *, batch: int, window_seconds: int) -> tuple[int, int]:
    """One pass: returns (sessions deleted, counters deleted). Each batch is its own short
    transaction; a full batch means there may be more, so it goes on."""
    deleted_sessions = deleted_counters = 0
    while True:
        async with database.connect(read_only=False) as connection:
            removed = await sessions.delete_finished(connection, batch=batch)
            await connection.commit()
        deleted_sessions += removed
        if removed < batch:
            break
    while True:
        async with database.connect(read_only=False) as connection:
            removed = await throttle.delete_old_windows(
                connection, window_seconds=window_seconds, batch=batch
            )
            await connection.commit()
        deleted_counters += removed
        if removed < batch:
            break
    return deleted_sessions, deleted_counters


async def clean_forever(database: Database, settings: Settings) -> None:
    """Runs as a background task of each worker. Jitter spreads the workers' passes; SKIP
    LOCKED keeps passes that do meet from waiting on each other. Errors (say, the database
    is down) are logged and the next pass tries again."""
    interval = settings.session_cleanup_interval_seconds
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.5))
        try:
            deleted = await clean_once(
                database,
                batch=settings.session_cleanup_batch,
                window_seconds=settings.login_throttle_window_seconds,
            )
        except Exception as exc:  # the task must outlive any one failure
            logger.warning("session cleanup failed: %s: %s", type(exc).__name__, exc)
            continue
        if any(deleted):
            logger.info("cleanup deleted %d sessions and %d login counters", *deleted)
