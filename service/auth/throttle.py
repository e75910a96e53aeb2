"""Login throttling, counted in PostgreSQL so that every worker and instance shares it.

Failed attempts are counted per (user name, client address), per user name and per client
address, in fixed windows. An attempt first *reserves* its place in all three counters with
one statement (an upsert per counter, in a function of the migration): over any limit, the
statement takes its own counts back and the caller answers 429 before any bcrypt work. The
upserts' row locks serialise concurrent attempts on one counter, so no more than the limit
are ever evaluated, whatever the number of processes, and a refused attempt counts nowhere
(one attacking address cannot use up a user's or its own other limits with refused tries).
A successful attempt gives its place back. Unknown user names count like known ones."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Tuple, delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth.models import LoginFailures
from service.core.schemas import reject_unstorable_text
from service.core.settings import Settings

MAX_NAME_KEY_LENGTH = 100
COUNT_ATTEMPT = text(
    "SELECT refused_by, retry_after, counted_window "
    "FROM count_login_failure(:scopes, :keys, :limits, :window)"
)


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    window_seconds: int
    per_user_address: int
    per_user: int
    per_address: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottleLimits:
        return cls(
            window_seconds=settings.login_throttle_window_seconds,
            per_user_address=settings.login_failures_per_user_address,
            per_user=settings.login_failures_per_user,
            per_address=settings.login_failures_per_address,
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """An attempt's place in the counters of one window, to give back if it succeeds."""

    keys: tuple[tuple[str, str], ...]
    window_start: datetime


@dataclass(frozen=True, slots=True)
class Throttled:
    limit: str  # which limit refused: user_address, user or address
    retry_after_seconds: int


def name_key(username: str) -> str:
    """Names that cannot be stored are no user's, but are still counted: by their digest."""
    try:
        reject_unstorable_text(username)
    except ValueError:
        return "sha256:" + hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()
    return username[:MAX_NAME_KEY_LENGTH]


def _keys(username: str, address: str) -> tuple[tuple[str, str], ...]:
    name = name_key(username)
    # Sorted by (scope, key): every statement locks the rows in the same order, no deadlock.
    return (("address", address), ("user", name), ("user_address", f"{address} {name}"))


async def reserve(
    connection: AsyncConnection, *, username: str, address: str, limits: ThrottleLimits
) -> Reservation | Throttled:
    """Count one attempt: one statement (the count_login_failure function of the migration),
    all three counters or none. Run it on an autocommit connection, so no lock it takes
    outlives the statement."""
    keys = _keys(username, address)
    limit_of = {
        "address": limits.per_address,
        "user": limits.per_user,
        "user_address": limits.per_user_address,
    }
    row = (
        await connection.execute(
            COUNT_ATTEMPT,
            {
                "scopes": [scope for scope, _ in keys],
                "keys": [key for _, key in keys],
                "limits": [limit_of[scope] for scope, _ in keys],
                "window": timedelta(seconds=limits.window_seconds),
            },
        )
    ).one()
    if row.refused_by is not None:
        return Throttled(limit=row.refused_by, retry_after_seconds=row.retry_after)
    return Reservation(keys=keys, window_start=row.counted_window)


async def give_back(connection: AsyncConnection, *, reservation: Reservation) -> None:
    """A successful attempt is not a failure: take it out of the counts again. The rows are
    locked in the same order as `reserve` locks them, so the two cannot deadlock."""
    mine = (
        select(LoginFailures.scope, LoginFailures.key, LoginFailures.window_start)
        .where(
            tuple_(LoginFailures.scope, LoginFailures.key).in_(reservation.keys),
            LoginFailures.window_start == reservation.window_start,
        )
        .order_by(LoginFailures.scope, LoginFailures.key)
        .with_for_update()
    )
    await connection.execute(
        update(LoginFailures)
        .where(_primary_key().in_(mine))
        .values(failures=LoginFailures.failures - 1)
    )


def _primary_key() -> Tuple:
    return tuple_(LoginFailures.scope, LoginFailures.key, LoginFailures.window_start)


async def delete_old_windows(
    connection: AsyncConnection, *, window_seconds: int, batch: int
) -> int:
    """Delete up to `batch` counters of windows that have ended (SKIP LOCKED, as sessions)."""
    ended = (
        select(LoginFailures.scope, LoginFailures.key, LoginFailures.window_start)
        .where(LoginFailures.window_start < func.now() - timedelta(seconds=window_seconds))
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    deleted = await connection.execute(
        delete(LoginFailures).where(_primary_key().in_(ended)).returning(LoginFailures.scope)
    )
    return len(deleted.all())
