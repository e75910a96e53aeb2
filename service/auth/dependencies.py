"""Who is calling: one dependency that verifies the bearer token (no database) and yields the
caller's claims together with the request's connection."""

# No `from __future__ import annotations` here: FastAPI reads BearerCaller.__call__'s
# annotations at runtime, and an instance has no module globals to resolve strings in.

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from service.auth.caller import CALLER, Claims
from service.core.connection import READ_ONLY_METHODS, Db, database_of
from service.core.security import InvalidTokenError, PasswordHasher, TokenService

T = TypeVar("T")

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN = "Invalid or expired token"


def unauthorized(detail: str = "Not authenticated") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=UNAUTHORIZED_HEADERS)


@dataclass(frozen=True, slots=True)
class Caller(Db):
    """The request's connection plus who is calling. Not yet checked against the database:
    each route's statement joins `CALLER` and answers 401 when the caller has no row."""

    claims: Claims

    def bind(self, **params: Any) -> dict[str, Any]:
        return self.claims.bind(**params)

    async def require_row(self) -> None:
        """401 unless the caller has a row: for routes whose own statement cannot tell."""
        known_caller((await self.connection.execute(_CALLER_EXISTS, self.bind())).first())


_CALLER_EXISTS = CALLER.select()


def known_caller(row: T | None) -> T:
    """The first row of a statement that joins `CALLER`: None means an unknown caller."""
    if row is None:
        raise unauthorized(INVALID_TOKEN)
    return row


class BearerCaller(OAuth2PasswordBearer):
    """A security scheme (so OpenAPI documents it) whose dependency is the whole of
    authentication: one call per request instead of a graph of token, tokens and session
    dependencies."""

    async def __call__(  # type: ignore[override]
        self, request: Request
    ) -> AsyncIterator[Caller]:
        token = await super().__call__(request)
        if token is None:
            raise unauthorized()
        tokens: TokenService = request.app.state.tokens
        try:
            claims = Claims.from_token(tokens.claims_of(token, "access"))
        except (InvalidTokenError, ValueError):
            raise unauthorized(INVALID_TOKEN) from None
        database = database_of(request)
        read_only = request.method in READ_ONLY_METHODS
        async with database.connect(read_only=read_only) as connection:
            yield Caller(connection, database.retry_attempts, claims)


# The scheme keeps its earlier name so the published OpenAPI document does not change.
bearer_caller = BearerCaller(
    tokenUrl="/auth/token", scheme_name="OAuth2PasswordBearer", auto_error=False
)
CallerDep = Annotated[Caller, Depends(bearer_caller)]


# async, like every dependency here: FastAPI runs a plain `def` one in a worker thread.
async def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


TokensDep = Annotated[TokenService, Depends(get_tokens)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
