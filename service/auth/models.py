"""Server-side sessions and login-failure counters: the auth state every worker shares."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.core.models import Base


class AuthSession(Base):
    """One login. Its tokens carry `id`; the refresh token also carries `refresh_id`, which
    every refresh replaces, so an older refresh token presented again is recognised."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    refresh_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(String(20))


class LoginFailures(Base):
    """Failed logins in one fixed window, for one key of one scope (see auth/throttle.py)."""

    __tablename__ = "login_failures"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, index=True
    )
    failures: Mapped[int] = mapped_column(Integer)


# The tables themselves, for Core statements (no ORM layer on the request path).
auth_sessions_table = cast(Table, AuthSession.__table__)
login_failures_table = cast(Table, LoginFailures.__table__)
