from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, status

from service.auth import sessions, throttle
from service.auth.dependencies import (
    CallerDep,
    HasherDep,
    ThrottleLimitsDep,
    TokensDep,
    client_address,
    too_many_attempts,
    unauthorized,
)
from service.auth.schemas import LoginForm, TokenPair
from service.core import metrics
from service.core.connection import DatabaseDep, DbDep
from service.core.db import commit_with_retry
from service.core.openapi import responses
from service.core.schemas import reject_unstorable_text
from service.core.security import InvalidTokenError, TokenService
from service.users import service as users

router = APIRouter(prefix="/auth", tags=["auth"])

# One message for unknown user and wrong password: the answer must not tell them apart.
BAD_CREDENTIALS = "Incorrect username or password"
BAD_REFRESH = "Invalid or expired refresh token"


def _issue_pair(
    tokens: TokenService,
    response: Response,
    *,
    subject: uuid.UUID,
    session_id: uuid.UUID,
    refresh_id: uuid.UUID,
) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    return TokenPair(
        access_token=tokens.issue(subject, "access", session_id=session_id),
        refresh_token=tokens.issue(subject, "refresh", session_id=session_id, token_id=refresh_id),
    )


@router.post("/token", response_model=TokenPair, responses=responses(401, 422, 429, 503))
async def login(
    *,
    request: Request,
    form: Annotated[LoginForm, Depends()],
    database: DatabaseDep,
    hasher: HasherDep,
    tokens: TokensDep,
    limits: ThrottleLimitsDep,
    response: Response,
) -> TokenPair:
    async with hasher.admitted():  # 503 at once when this worker's hashing is saturated
        try:
            name = reject_unstorable_text(form.username)
        except ValueError:
            name = None  # cannot be stored, so no such user; still counted and verified
        # Autocommit: the count's row locks end with its statement. The connection goes
        # back to the pool before bcrypt's ~0.25 s, which must not hold one.
        async with database.connect(read_only=True) as connection:
            reserved = await throttle.reserve(
                connection, username=form.username, address=client_address(request), limits=limits
            )
            if isinstance(reserved, throttle.Throttled):
                raise too_many_attempts(reserved)
            user = await users.get_login(connection, name=name) if name else None
        password_ok = await hasher.verify(form.password, user.password_hash if user else None)
    if user is None or not password_ok:
        metrics.LOGINS.labels(outcome="unknown_user" if user is None else "bad_password").inc()
        raise unauthorized(BAD_CREDENTIALS)

    refresh_id = uuid.uuid4()

    async with database.connect(read_only=False) as connection:

        async def open_session() -> uuid.UUID:
            await throttle.give_back(connection, reservation=reserved)
            return await sessions.create_session(
                connection,
                user_id=user.id,
                refresh_id=refresh_id,
                ttl_seconds=tokens.refresh_ttl_seconds,
            )

        session_id = await commit_with_retry(
            connection,
            open_session,
            on_retry=metrics.record_db_retry,
            attempts=database.retry_attempts,
        )
    metrics.LOGINS.labels(outcome="success").inc()
    return _issue_pair(
        tokens, response, subject=user.pubid, session_id=session_id, refresh_id=refresh_id
    )


@router.post("/refresh", response_model=TokenPair, responses=responses(401, 422, 503))
async def refresh(
    *,
    # FastAPI reads an empty form field as a missing one; both are an invalid token (401).
    refresh_token: Annotated[str, Form(max_length=4096)] = "",
    db: DbDep,
    tokens: TokensDep,
    response: Response,
) -> TokenPair:
    if not refresh_token:
        raise unauthorized(BAD_REFRESH)
    try:
        claims = tokens.claims_of(refresh_token, "refresh")
    except InvalidTokenError:
        raise unauthorized(BAD_REFRESH) from None
    presented = claims.token_id
    assert presented is not None  # claims_of requires it of a refresh token
    replacement = uuid.uuid4()
    outcome = await db.commit_with_retry(
        lambda: sessions.rotate_refresh(
            db.connection,
            user_pubid=claims.subject,
            session_id=claims.session_id,
            presented=presented,
            replacement=replacement,
            ttl_seconds=tokens.refresh_ttl_seconds,
        )
    )
    if outcome == "reuse_detected":
        metrics.SESSIONS_ENDED.labels(reason="refresh_reuse").inc()
    if outcome != "rotated":
        raise unauthorized(BAD_REFRESH)
    return _issue_pair(
        tokens,
        response,
        subject=claims.subject,
        session_id=claims.session_id,
        refresh_id=replacement,
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401, 503))
async def logout(caller: CallerDep) -> None:
    """End the session of this access token: its access and refresh tokens stop working on
    every worker and instance from the next request on. Other sessions are untouched."""
    await caller.commit_with_retry(lambda: sessions.end_own_session(caller))
    metrics.SESSIONS_ENDED.labels(reason="logout").inc()
