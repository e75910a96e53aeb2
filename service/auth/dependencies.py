"""Who is calling: bearer access tokens resolved to a user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select

from service.auth.sessions import live_session
from service.auth.throttle import Throttled, ThrottleLimits
from service.core import metrics
from service.core.db import Database, SessionDep, get_database
from service.core.security import InvalidTokenError, PasswordHasher, TokenClaims, TokenService
from service.users.models import User


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as plain values: safe to use across a retried transaction."""

    id: int
    pubid: uuid.UUID
    name: str


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


# async, like every dependency here: FastAPI runs a plain `def` one in a worker thread.
async def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


TokensDep = Annotated[TokenService, Depends(get_tokens)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]


def unauthorized(detail: str = "Not authenticated") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=UNAUTHORIZED_HEADERS)


def too_many_attempts(throttled: Throttled) -> HTTPException:
    """The same answer whether or not the user exists; Retry-After is when the window ends."""
    metrics.LOGINS_THROTTLED.labels(limit=throttled.limit).inc()
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        "Too many failed login attempts, retry later",
        headers={"Retry-After": str(throttled.retry_after_seconds)},
    )


async def get_token_claims(
    tokens: TokensDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> TokenClaims:
    if token is None:
        raise unauthorized()
    try:
        return tokens.claims_of(token, "access")
    except InvalidTokenError:
        raise unauthorized("Invalid or expired token") from None


TokenClaimsDep = Annotated[TokenClaims, Depends(get_token_claims)]


async def get_current_user(session: SessionDep, claims: TokenClaimsDep) -> Principal:
    found = (
        await session.execute(
            select(User.id, User.pubid, User.name).where(
                User.pubid == claims.subject, live_session(claims.session_id)
            )
        )
    ).one_or_none()
    if found is None:  # no such user, or the token's session has ended or expired
        raise unauthorized("Invalid or expired token")
    return Principal(id=found.id, pubid=found.pubid, name=found.name)


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def client_address(request: Request) -> str:
    """The peer's address; under gunicorn, uvicorn has already replaced it with the
    X-Forwarded-For client if (and only if) the peer is in FORWARDED_ALLOW_IPS."""
    return request.client.host if request.client else "unknown"


async def get_throttle_limits(request: Request) -> ThrottleLimits:
    limits: ThrottleLimits = request.app.state.throttle_limits
    return limits


ThrottleLimitsDep = Annotated[ThrottleLimits, Depends(get_throttle_limits)]
# For the throttle's counting statement, which must not run inside a longer transaction.
DatabaseDep = Annotated[Database, Depends(get_database)]
