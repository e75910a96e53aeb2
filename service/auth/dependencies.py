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
from service.auth.throttle import Throttled, ThrottleLimits
from service.core import metrics
from service.core.connection import READ_ONLY_METHODS, Db, database_of
from service.core.security import InvalidTokenError, PasswordHasher, TokenService

T = TypeVar("T")

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN = "Invalid or expired token"


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


class BearerClaims(OAuth2PasswordBearer):
    """A security scheme (so OpenAPI documents it) whose dependency verifies the bearer
    access token, without the database: the caller's claims, not yet checked against the
    database (for routes that must not hold a connection while they work, such as bcrypt)."""

    async def __call__(self, request: Request) -> Claims:  # type: ignore[override]
        token = await super().__call__(request)
        if token is None:
            raise unauthorized()
        tokens: TokenService = request.app.state.tokens
        try:
            return Claims.from_token(tokens.claims_of(token, "access"))
        except InvalidTokenError:
            raise unauthorized(INVALID_TOKEN) from None


class BearerCaller(BearerClaims):
    """The whole of authentication as one dependency: the verified claims and the request's
    connection, instead of a graph of token, tokens and session dependencies."""

    async def __call__(  # type: ignore[override]
        self, request: Request
    ) -> AsyncIterator[Caller]:
        claims = await super().__call__(request)
        database = database_of(request)
        read_only = request.method in READ_ONLY_METHODS
        async with database.connect(read_only=read_only) as connection:
            yield Caller(connection, database.retry_attempts, claims)


# The scheme keeps its earlier name so the published OpenAPI document does not change.
SCHEME_NAME = "OAuth2PasswordBearer"
bearer_caller = BearerCaller(tokenUrl="/auth/token", scheme_name=SCHEME_NAME, auto_error=False)
bearer_claims = BearerClaims(tokenUrl="/auth/token", scheme_name=SCHEME_NAME, auto_error=False)
CallerDep = Annotated[Caller, Depends(bearer_caller)]
ClaimsDep = Annotated[Claims, Depends(bearer_claims)]


# async, like every dependency here: FastAPI runs a plain `def` one in a worker thread.
async def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


TokensDep = Annotated[TokenService, Depends(get_tokens)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]


def client_address(request: Request) -> str:
    """The peer's address; under gunicorn, uvicorn has already replaced it with the
    X-Forwarded-For client if (and only if) the peer is in FORWARDED_ALLOW_IPS."""
    return request.client.host if request.client else "unknown"


async def get_throttle_limits(request: Request) -> ThrottleLimits:
    limits: ThrottleLimits = request.app.state.throttle_limits
    return limits


ThrottleLimitsDep = Annotated[ThrottleLimits, Depends(get_throttle_limits)]
