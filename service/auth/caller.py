"""Who is calling, as SQL: the one place that says which `users` row a token stands for.

Every authenticated statement finds its caller through `CALLER` (or `caller_clause()`), so
the authorization check runs inside the route's own statement: one round trip, never a
separate lookup. No caller row means 401. A new rule about who may call (a live login
session, say) is one edit here, with its parameter added in `Claims.bind`, and every route
follows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CTE, ColumnElement, Table, Uuid, bindparam, select

from service.users.models import users_table

CALLER_PUBID = "caller_pubid"


@dataclass(frozen=True, slots=True)
class Claims:
    """What the SQL needs from a verified token. Plain values: safe across a retried
    transaction, and cheap to carry."""

    user_pubid: uuid.UUID

    @classmethod
    def from_token(cls, claims: Mapping[str, Any]) -> Claims:
        """ValueError when the subject is not a user id."""
        return cls(user_pubid=uuid.UUID(claims["sub"]))

    def bind(self, **params: Any) -> dict[str, Any]:
        """A statement's parameters plus the caller's."""
        params[CALLER_PUBID] = self.user_pubid
        return params


def caller_clause(users: Table = users_table) -> ColumnElement[bool]:
    """True for the caller's row of `users`."""
    return users.c.pubid == bindparam(CALLER_PUBID, type_=Uuid())


# WITH caller AS (SELECT users.id, users.pubid FROM users WHERE <caller_clause>): join it,
# and a missing row tells "who are you?" (401) apart from "no such thing of yours" (404).
CALLER: CTE = select(users_table.c.id, users_table.c.pubid).where(caller_clause()).cte("caller")
