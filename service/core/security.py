"""Password hashing (off the event loop) and JWT access/refresh tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import bcrypt
import jwt

from service.core.metrics import PASSWORD_HASH_DURATION
from service.core.settings import Settings

T = TypeVar("T")

# Fixed in code: the token's own header never chooses the algorithm.
JWT_ALGORITHM = "HS256"
BCRYPT_MAX_PASSWORD_BYTES = 72
TokenType = Literal["access", "refresh"]


class InvalidTokenError(Exception):
    pass


def _timed(operation: str, function: Callable[[bytes, bytes], T], *args: bytes) -> T:
    """Runs in the worker thread, so the histogram sees bcrypt's time, not the queueing."""
    started = time.perf_counter()
    try:
        return function(*args)
    finally:
        PASSWORD_HASH_DURATION.labels(operation=operation).observe(time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class PasswordHasher:
    rounds: int
    dummy_hash: bytes

    @classmethod
    async def create(cls, rounds: int) -> PasswordHasher:
        """The dummy hash lets a login for an unknown user cost the same as a wrong password."""
        dummy = await asyncio.to_thread(
            bcrypt.hashpw, uuid.uuid4().bytes, bcrypt.gensalt(rounds=rounds)
        )
        return cls(rounds=rounds, dummy_hash=dummy)

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(rounds=self.rounds)
        hashed = await asyncio.to_thread(_timed, "hash", bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        candidate = password.encode()
        if hashed is None or len(candidate) > BCRYPT_MAX_PASSWORD_BYTES:
            await asyncio.to_thread(_timed, "verify", bcrypt.checkpw, b"x", self.dummy_hash)
            return False
        return await asyncio.to_thread(_timed, "verify", bcrypt.checkpw, candidate, hashed.encode())


@dataclass(frozen=True, slots=True)
class TokenService:
    secret: str
    audience: str
    issuer: str
    access_ttl_seconds: int
    refresh_ttl_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        return cls(
            secret=settings.jwt_secret_key.get_secret_value(),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            access_ttl_seconds=settings.access_token_ttl_seconds,
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        )

    def issue(self, subject: str, token_type: TokenType) -> str:
        now = int(time.time())
        ttl = self.access_ttl_seconds if token_type == "access" else self.refresh_ttl_seconds
        claims = {
            "sub": subject,
            "type": token_type,
            "aud": self.audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)

    def claims_of(self, token: str, expected_type: TokenType) -> dict[str, Any]:
        """The verified claims of a token of the expected type, with a non-empty subject."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[JWT_ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "type"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if claims.get("type") != expected_type:
            raise InvalidTokenError(f"expected a {expected_type} token")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidTokenError("token has no subject")
        return claims

    def subject_of(self, token: str, expected_type: TokenType) -> str:
        subject: str = self.claims_of(token, expected_type)["sub"]
        return subject
