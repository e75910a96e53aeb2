from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response

from service.auth.dependencies import HasherDep, TokensDep, unauthorized
from service.auth.schemas import LoginForm, TokenPair
from service.core import metrics
from service.core.db import SessionDep
from service.core.openapi import responses
from service.core.schemas import reject_unstorable_text
from service.core.security import InvalidTokenError, TokenService
from service.users import service as users

router = APIRouter(prefix="/auth", tags=["auth"])

# One message for unknown user and wrong password: the answer must not tell them apart.
BAD_CREDENTIALS = "Incorrect username or password"


def _issue_pair(tokens: TokenService, subject: str, response: Response) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    return TokenPair(
        access_token=tokens.issue(subject, "access"),
        refresh_token=tokens.issue(subject, "refresh"),
    )


@router.post("/token", response_model=TokenPair, responses=responses(401, 422, 503))
async def login(
    form: Annotated[LoginForm, Depends()],
    session: SessionDep,
    hasher: HasherDep,
    tokens: TokensDep,
    response: Response,
) -> TokenPair:
    try:
        name = reject_unstorable_text(form.username)
    except ValueError:
        name = None  # cannot be stored, so no such user; still pay for a verify below
    user = await users.get_user_by_name(session, name=name) if name else None
    # Give the pooled connection back before bcrypt's ~0.25 s: a login must not hold a
    # connection that other requests are waiting for. (The user stays loaded, detached.)
    await session.close()
    password_ok = await hasher.verify(form.password, user.password_hash if user else None)
    if user is None or not password_ok:
        metrics.LOGINS.labels(outcome="unknown_user" if user is None else "bad_password").inc()
        raise unauthorized(BAD_CREDENTIALS)
    metrics.LOGINS.labels(outcome="success").inc()
    return _issue_pair(tokens, str(user.pubid), response)


@router.post("/refresh", response_model=TokenPair, responses=responses(401, 422, 503))
async def refresh(
    *,
    # FastAPI reads an empty form field as a missing one; both are an invalid token (401).
    refresh_token: Annotated[str, Form(max_length=4096)] = "",
    session: SessionDep,
    tokens: TokensDep,
    response: Response,
) -> TokenPair:
    try:
        pubid = uuid.UUID(tokens.subject_of(refresh_token, "refresh"))
    except (InvalidTokenError, ValueError):
        raise unauthorized("Invalid or expired refresh token") from None
    if await users.get_user(session, pubid=pubid) is None:
        raise unauthorized("Invalid or expired refresh token")
    return _issue_pair(tokens, str(pubid), response)
