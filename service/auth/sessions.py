"""Server-side sessions: created at login, rotated on refresh, ended by logout, by a
reused refresh token or by a password change. Plain async functions, connection first."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from sqlalchemy import Uuid, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth.caller import CALLER, CALLER_SESSION
from service.auth.dependencies import Caller, known_caller
from service.auth.models import AuthSession
from service.auth.models import auth_sessions_table as auth_sessions
from service.users.models import User

# Ended sessions stay a while for inspection (who logged out, when, why) before cleanup.
ENDED_SESSION_RETENTION = timedelta(hours=1)
EndReason = Literal["logout", "password_change", "refresh_reuse"]
Rotation = Literal["rotated", "reuse_detected", "refused"]


async def create_session(
    connection: AsyncConnection, *, user_id: int, refresh_id: uuid.UUID, ttl_seconds: int
) -> uuid.UUID:
    inserted = await connection.execute(
        insert(AuthSession)
        .values(
            user_id=user_id,
            refresh_id=refresh_id,
            expires_at=func.now() + timedelta(seconds=ttl_seconds),
        )
        .returning(AuthSession.id)
    )
    created: uuid.UUID = inserted.scalar_one()
    return created


async def rotate_refresh(
    connection: AsyncConnection,
    *,
    user_pubid: uuid.UUID,
    session_id: uuid.UUID,
    presented: uuid.UUID,
    replacement: uuid.UUID,
    ttl_seconds: int,
) -> Rotation:
    """Swap the session's current refresh id for `replacement` if `presented` is current.

    If `presented` is an older refresh of a live session, someone replayed it: end the whole
    session (RFC 9700, refresh token reuse detection), so thief and victim both log in
    again. Two refreshes racing with the same token end the same way: the row lock makes
    the second see the first's rotation."""
    of_user = (
        AuthSession.user_id == select(User.id).where(User.pubid == user_pubid).scalar_subquery()
    )
    alive = and_(
        AuthSession.id == session_id,
        of_user,
        AuthSession.ended_at.is_(None),
        AuthSession.expires_at > func.now(),
    )
    rotated = await connection.scalar(
        update(AuthSession)
        .where(alive, AuthSession.refresh_id == presented)
        .values(refresh_id=replacement, expires_at=func.now() + timedelta(seconds=ttl_seconds))
        .returning(AuthSession.id)
    )
    if rotated is not None:
        return "rotated"
    reused = await connection.scalar(
        update(AuthSession)
        .where(alive, AuthSession.refresh_id != presented)
        .values(ended_at=func.now(), end_reason="refresh_reuse")
        .returning(AuthSession.id)
    )
    return "refused" if reused is None else "reuse_detected"


# The caller's own session, in the statement that checks the caller: an ended or unknown
# session has no caller row, so nothing is updated and the answer is 401.
_END_OWN_SESSION = (
    update(auth_sessions)
    .where(
        auth_sessions.c.id == bindparam(CALLER_SESSION, type_=Uuid()),
        auth_sessions.c.user_id.in_(select(CALLER.c.id)),
    )
    .values(ended_at=func.now(), end_reason="logout")
    .returning(auth_sessions.c.id)
)


async def end_own_session(caller: Caller) -> None:
    known_caller((await caller.connection.execute(_END_OWN_SESSION, caller.bind())).first())


async def end_user_sessions(connection: AsyncConnection, *, user_id: int, reason: EndReason) -> int:
    ended = await connection.scalars(
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.ended_at.is_(None))
        .values(ended_at=func.now(), end_reason=reason)
        .returning(AuthSession.id)
    )
    return len(ended.all())


async def delete_finished(connection: AsyncConnection, *, batch: int) -> int:
    """Delete up to `batch` expired sessions, or ended ones past their retention. SKIP
    LOCKED: workers cleaning at the same time take different rows, and nothing waits on a
    row a request is updating."""
    doomed = (
        select(AuthSession.id)
        .where(
            or_(
                AuthSession.ended_at < func.now() - ENDED_SESSION_RETENTION,
                AuthSession.expires_at <= func.now(),
            )
        )
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    deleted = await connection.scalars(
        delete(AuthSession).where(AuthSession.id.in_(doomed)).returning(AuthSession.id)
    )
    return len(deleted.all())
