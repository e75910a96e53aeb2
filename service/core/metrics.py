"""Prometheus metrics, written per process to PROMETHEUS_MULTIPROC_DIR when it is set.

Each gauge names its multiprocess mode: `livesum` gauges carry a `worker` slot label so
they read per worker and `sum()` to a total, and vanish when their worker dies.
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core import sqlstates
from service.core.deployment import WORKER_SLOT_ENV
from service.core.metrics_files import aggregate_registry

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
HASH_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)

HTTP_REQUESTS = Counter("http_requests", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request start to response end",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "Requests being handled now",
    ["worker"],
    multiprocess_mode="livesum",
)
WORKER_REQUESTS = Counter("worker_requests", "HTTP requests answered, by worker slot", ["worker"])
WORKER_STARTS = Counter("worker_starts", "Worker processes started", ["worker"])
WORKER_EXITS = Counter("worker_exits", "Worker processes that exited", ["worker"])

DB_POOL_SIZE = Gauge(
    "db_pool_size", "Configured pool size", ["worker"], multiprocess_mode="livesum"
)
DB_POOL_CHECKED_OUT = Gauge(
    "db_pool_checked_out",
    "Connections checked out of the pool now",
    ["worker"],
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "db_pool_overflow",
    "Overflow connections in use now",
    ["worker"],
    multiprocess_mode="livesum",
)
DB_CONNECTIONS_OPENED = Counter(
    "db_connections_opened", "New database connections opened", ["worker"]
)
DB_CHECKOUT_WAIT = Histogram(
    "db_pool_checkout_wait_seconds",
    "Time waiting for a pooled connection",
    buckets=DB_BUCKETS,
)
DB_QUERY_DURATION = Histogram(
    "db_query_duration_seconds", "Time executing one statement", buckets=DB_BUCKETS
)
DB_ERRORS = Counter("db_errors", "Database errors by kind", ["kind"])

AUTH_LOGINS = Counter("auth_logins", "Login attempts by outcome", ["outcome"])
LOGINS = AUTH_LOGINS
PASSWORD_HASH_DURATION = Histogram(
    "password_hash_duration_seconds",
    "bcrypt time per operation (in a worker thread)",
    ["operation"],
    buckets=HASH_BUCKETS,
)
HASH_ADMISSIONS = Counter(
    "password_hash_admissions",
    "Requests that asked for a hashing slot: admitted, or rejected with 503",
    ["outcome"],
)
HASH_ADMISSION_WAIT = Histogram(
    "password_hash_admission_wait_seconds",
    "Time waiting for a hashing slot (admitted or not)",
    buckets=(*DB_BUCKETS[:-1], 2.0, 5.0),
)
LOGINS_THROTTLED = Counter(
    "auth_logins_throttled",
    "Login and password-change attempts refused with 429, by the limit that refused them",
    ["limit"],
)
SESSIONS_ENDED = Counter(
    "auth_sessions_ended", "Sessions ended before they expired, by reason", ["reason"]
)
BUILD_INFO = Gauge(
    "service_build_info",
    "Version information; always 1",
    ["version", "python_version"],
    multiprocess_mode="max",
)


def worker_slot() -> str:
    return os.environ.get(WORKER_SLOT_ENV, "0")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def record_db_retry(sqlstate: str) -> None:
    kind = "deadlock_retry" if sqlstate == sqlstates.DEADLOCK_DETECTED else "serialization_retry"
    DB_ERRORS.labels(kind=kind).inc()


def record_worker_start() -> None:
    slot = worker_slot()
    WORKER_STARTS.labels(worker=slot).inc()
    try:
        version = metadata.version("service")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        version = "unknown"
    BUILD_INFO.labels(version=version, python_version=platform.python_version()).set(1)


def render_latest() -> tuple[bytes, str]:
    """One fresh aggregate per scrape: the same numbers whichever process answers."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    return generate_latest(aggregate_registry(directory)), CONTENT_TYPE_LATEST


def instrument_engine(engine: AsyncEngine, *, pool_size: int) -> None:
    slot = worker_slot()
    checked_out = DB_POOL_CHECKED_OUT.labels(worker=slot)
    overflow = DB_POOL_OVERFLOW.labels(worker=slot)
    opened = DB_CONNECTIONS_OPENED.labels(worker=slot)
    DB_POOL_SIZE.labels(worker=slot).set(pool_size)
    checked_out.set(0)
    overflow.set(0)
    pool = engine.sync_engine.pool
    sync_engine = engine.sync_engine

    def on_connect(*_: Any) -> None:
        opened.inc()

    def on_checkout(*_: Any) -> None:
        checked_out.inc()
        overflow.set(max(0, pool.overflow()))  # type: ignore[attr-defined]

    def on_checkin(*_: Any) -> None:
        # Fires for every checkout, invalidated connections included, so inc/dec balance.
        checked_out.dec()
        overflow.set(max(0, pool.overflow()))  # type: ignore[attr-defined]

    # Statements on one connection run one at a time, so one start slot per connection is
    # enough; a failed statement leaves a stale value that the next one overwrites.
    def before_execute(conn: Any, *_: Any) -> None:
        conn.info["query_started"] = time.perf_counter()

    def after_execute(conn: Any, *_: Any) -> None:
        started = conn.info.pop("query_started", None)
        if started is not None:
            DB_QUERY_DURATION.observe(time.perf_counter() - started)

    event.listen(pool, "connect", on_connect)
    event.listen(pool, "checkout", on_checkout)
    event.listen(pool, "checkin", on_checkin)
    event.listen(sync_engine, "before_cursor_execute", before_execute)
    event.listen(sync_engine, "after_cursor_execute", after_execute)
