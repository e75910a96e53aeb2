"""Server-side sessions: created at login, rotated on refresh, ended by logout, by a
reused refresh token or by a password change. Plain async functions, session first."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import AuthSession
from service.users.models import User

# Ended sessions stay a while for inspection (who logged out, when, why) before cleanup.
ENDED_SESSION_RETENTION = timedelta(hours=1)
EndReason = Literal["logout", "password_change", "refresh_reuse"]
Rotation = Literal["rotated", "reuse_detected", "refused"]


def live_session(session_id: uuid.UUID) -> ColumnElement[bool]:
    """True for the row of `User` whose session `session_id` exists, has not ended and has
    not expired. The one rule for "is this token's session alive", to fold into any
    statement that selects the caller from `users`."""
    return exists().where(
        AuthSession.id == session_id,
        AuthSession.user_id == User.id,
        AuthSession.ended_at.is_(None),
        AuthSession.expires_at > func.now(),
    )


async def create_session(
    session: AsyncSession, *, user_id: int, refresh_id: uuid.UUID, ttl_seconds: int
) -> uuid.UUID:
    inserted = await session.execute(
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
    session: AsyncSession,
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
    rotated = await session.scalar(
        update(AuthSession)
        .where(alive, AuthSession.refresh_id == presented)
        .values(refresh_id=replacement, expires_at=func.now() + timedelta(seconds=ttl_seconds))
        .returning(AuthSession.id)
    )
    if rotated is not None:
        return "rotated"
    reused = await session.scalar(
        update(AuthSession)
        .where(alive, AuthSession.refresh_id != presented)
        .values(ended_at=func.now(), end_reason="refresh_reuse")
        .returning(AuthSession.id)
    )
    return "refused" if reused is None else "reuse_detected"


async def end_session(session: AsyncSession, *, user_id: int, session_id: uuid.UUID) -> bool:
    ended = await session.scalar(
        update(AuthSession)
        .where(
            AuthSession.id == session_id,
            AuthSession.user_id == user_id,
            AuthSession.ended_at.is_(None),
        )
        .values(ended_at=func.now(), end_reason="logout")
        .returning(AuthSession.id)
    )
    return ended is not None


async def end_user_sessions(session: AsyncSession, *, user_id: int, reason: EndReason) -> int:
    ended = await session.scalars(
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.ended_at.is_(None))
        .values(ended_at=func.now(), end_reason=reason)
        .returning(AuthSession.id)
    )
    return len(ended.all())


async def delete_finished(session: AsyncSession, *, batch: int) -> int:
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
    deleted = await session.scalars(
        delete(AuthSession).where(AuthSession.id.in_(doomed)).returning(AuthSession.id)
    )
    return len(deleted.all())
