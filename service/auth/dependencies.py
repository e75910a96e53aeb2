"""Who is calling: bearer access tokens resolved to a user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from service.core.db import SessionDep
from service.core.security import InvalidTokenError, PasswordHasher, TokenService
from service.users import service as users


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


async def get_current_user(
    session: SessionDep,
    tokens: TokensDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    if token is None:
        raise unauthorized()
    try:
        subject = tokens.subject_of(token, "access")
        pubid = uuid.UUID(subject)
    except (InvalidTokenError, ValueError):
        raise unauthorized("Invalid or expired token") from None
    user = await users.get_user(session, pubid=pubid)
    if user is None:
        raise unauthorized("Invalid or expired token")
    return Principal(id=user.id, pubid=user.pubid, name=user.name)


CurrentUser = Annotated[Principal, Depends(get_current_user)]
