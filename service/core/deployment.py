"""Helpers for gunicorn.conf.py's hooks: configuration checks, connection budget, worker
slots, the metrics directory, and where a stuck worker was."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.settings import Settings
from service.core.urls import plain_dsn

# Set by gunicorn.conf.py's post_fork, read once per worker by service.core.metrics.
WORKER_SLOT_ENV = "SERVICE_WORKER_SLOT"

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METRICS_DIR_OWNER_ENV = "SERVICE_METRICS_DIR_MASTER_PID"
# Descriptors a worker holds besides its clients: pool connections come on top of these.
FD_RESERVE = 64


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `needed`, up to the hard limit (forked
    workers inherit it). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(target, soft)


def prepare_metrics_dir() -> str:
    """Runs when gunicorn reads its config, before anything imports prometheus_client (with
    preload_app the app is imported before any hook runs). Uses the operator's directory or
    makes one per master, and empties it once per master: gunicorn re-reads its config on
    SIGHUP, and those re-reads must keep what live and dead workers already counted."""
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        directory = tempfile.mkdtemp(prefix="service-metrics-")
        os.environ[METRICS_DIR_ENV] = directory
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if os.environ.get(_METRICS_DIR_OWNER_ENV) != str(os.getpid()):
        for entry in path.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        os.environ[_METRICS_DIR_OWNER_ENV] = str(os.getpid())
    return directory


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    workers: int
    per_worker: int
    max_connections: int | None
    reserved: int
    unknown_because: str = ""

    @property
    def needed(self) -> int:
        return self.workers * self.per_worker

    @property
    def available(self) -> int | None:
        if self.max_connections is None:
            return None
        return self.max_connections - self.reserved

    @property
    def fits(self) -> bool:
        return self.available is None or self.needed <= self.available

    def describe(self) -> str:
        text = (
            f"connection budget: {self.workers} workers x {self.per_worker} connections "
            f"(pool size + overflow) = {self.needed}"
        )
        if self.available is None:
            return text + f"; could not read max_connections ({self.unknown_because})"
        return (
            text + f"; database allows {self.available} "
            f"(max_connections {self.max_connections} - {self.reserved} reserved)"
        )


async def _server_limits(database_url: str, connect_seconds: float) -> tuple[int, int]:
    import asyncpg

    connection = await asyncpg.connect(plain_dsn(database_url), timeout=connect_seconds)
    try:
        max_connections = int(await connection.fetchval("SHOW max_connections"))
        superuser_reserved = int(await connection.fetchval("SHOW superuser_reserved_connections"))
    finally:
        await connection.close()
    return max_connections, superuser_reserved


def connection_budget(settings: Settings, workers: int) -> ConnectionBudget:
    """Ask the database for its limit with one short-lived connection (closed before any
    fork). An unreachable database is not fatal: workers boot and /readyz reports it."""
    reserve = settings.db_connection_reserve
    try:
        max_connections, superuser_reserved = asyncio.run(
            _server_limits(settings.database_url, settings.db_connect_timeout_seconds)
        )
    except Exception as exc:  # refused, timed out, auth failed: all mean "unknown", not fatal
        return ConnectionBudget(
            workers, settings.connections_per_worker, None, reserve, unknown_because=repr(exc)
        )
    return ConnectionBudget(
        workers, settings.connections_per_worker, max_connections, superuser_reserved + reserve
    )


def assign_slot(live_workers: dict[int, Any], worker: Any) -> None:
    """Give each worker the lowest free slot number: a bounded `worker` metrics label that a
    respawned worker inherits, so counters continue instead of piling up per pid."""
    taken = {getattr(other, "slot", None) for other in live_workers.values()}
    worker.slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def format_stacks() -> str:
    frames = sys._current_frames()
    parts = []
    for thread_id, frame in frames.items():
        parts.append(f"thread {thread_id}:\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)
