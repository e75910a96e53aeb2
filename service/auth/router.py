from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response
from fastapi.security import OAuth2PasswordRequestForm

from service.auth.caller import CALLER, Claims
from service.auth.dependencies import HasherDep, TokensDep, unauthorized
from service.auth.schemas import TokenPair
from service.core import metrics
from service.core.connection import DatabaseDep
from service.core.openapi import responses
from service.core.schemas import reject_unstorable_text
from service.core.security import InvalidTokenError, TokenService
from service.users import service as users

router = APIRouter(prefix="/auth", tags=["auth"])

# One message for unknown user and wrong password: the answer must not tell them apart.
BAD_CREDENTIALS = "Incorrect username or password"
INVALID_REFRESH = "Invalid or expired refresh token"
_CALLER_EXISTS = CALLER.select()


def _issue_pair(tokens: TokenService, subject: str, response: Response) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    return TokenPair(
        access_token=tokens.issue(subject, "access"),
        refresh_token=tokens.issue(subject, "refresh"),
    )


@router.post("/token", response_model=TokenPair, responses=responses(401, 422, 503))
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    database: DatabaseDep,
    hasher: HasherDep,
    tokens: TokensDep,
    response: Response,
) -> TokenPair:
    try:
        name = reject_unstorable_text(form.username)
    except ValueError:
        name = None  # cannot be stored, so no such user; still pay for a verify below
    user = None
    if name:
        # The connection goes back before bcrypt's ~0.25 s: a login must not hold one
        # that other requests are waiting for.
        async with database.connect(read_only=True) as connection:
            user = await users.get_login(connection, name=name)
    password_ok = await hasher.verify(form.password, user.password_hash if user else None)
    if user is None or not password_ok:
        metrics.LOGINS.labels(outcome="unknown_user" if user is None else "bad_password").inc()
        raise unauthorized(BAD_CREDENTIALS)
    metrics.LOGINS.labels(outcome="success").inc()
    return _issue_pair(tokens, str(user.pubid), response)


@router.post("/refresh", response_model=TokenPair, responses=responses(401, 422, 503))
async def refresh(
    refresh_token: Annotated[str, Form(max_length=4096)],
    database: DatabaseDep,
    tokens: TokensDep,
    response: Response,
) -> TokenPair:
    try:
        claims = Claims.from_token(tokens.claims_of(refresh_token, "refresh"))
    except (InvalidTokenError, ValueError):
        raise unauthorized(INVALID_REFRESH) from None
    # A read, though the route is a POST: autocommit spares the BEGIN and ROLLBACK.
    async with database.connect(read_only=True) as connection:
        known = (await connection.execute(_CALLER_EXISTS, claims.bind())).first()
    if known is None:
        raise unauthorized(INVALID_REFRESH)
    return _issue_pair(tokens, str(claims.user_pubid), response)
