"""Who is calling, as SQL: the one place that says which `users` row a token stands for.

Every authenticated statement finds its caller through `CALLER` (or `caller_clause()`), so
the authorization check runs inside the route's own statement: one round trip, never a
separate lookup. The caller is the token's user *and* the token's login session must be
alive (not ended, not expired). No caller row means 401."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CTE, ColumnElement, Table, Uuid, and_, bindparam, exists, func, select

from service.auth.models import auth_sessions_table
from service.core.security import TokenClaims
from service.users.models import users_table

CALLER_PUBID = "caller_pubid"
CALLER_SESSION = "caller_session"


@dataclass(frozen=True, slots=True)
class Claims:
    """What the SQL needs from a verified access token. Plain values: safe across a retried
    transaction, and cheap to carry."""

    user_pubid: uuid.UUID
    session_id: uuid.UUID

    @classmethod
    def from_token(cls, claims: TokenClaims) -> Claims:
        return cls(user_pubid=claims.subject, session_id=claims.session_id)

    def bind(self, **params: Any) -> dict[str, Any]:
        """A statement's parameters plus the caller's."""
        params[CALLER_PUBID] = self.user_pubid
        params[CALLER_SESSION] = self.session_id
        return params


def live_session(users: Table = users_table) -> ColumnElement[bool]:
    """The caller's login session exists for that user, has not ended and has not expired."""
    sessions = auth_sessions_table
    return exists().where(
        sessions.c.id == bindparam(CALLER_SESSION, type_=Uuid()),
        sessions.c.user_id == users.c.id,
        sessions.c.ended_at.is_(None),
        sessions.c.expires_at > func.now(),
    )


def caller_clause(users: Table = users_table) -> ColumnElement[bool]:
    """True for the caller's row of `users`, while the token's session is alive."""
    return and_(users.c.pubid == bindparam(CALLER_PUBID, type_=Uuid()), live_session(users))


# WITH caller AS (SELECT users.id, users.pubid FROM users WHERE <caller_clause>): join it,
# and a missing row tells "who are you?" (401) apart from "no such thing of yours" (404).
CALLER: CTE = select(users_table.c.id, users_table.c.pubid).where(caller_clause()).cte("caller")
