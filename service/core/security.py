"""Password hashing (off the event loop) and JWT access/refresh tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import bcrypt
import jwt

from service.core.metrics import PASSWORD_HASH_DURATION
from service.core.settings import Settings

T = TypeVar("T")

# Fixed in code: the token's own header never chooses the algorithm.
JWT_ALGORITHM = "HS256"
BCRYPT_MAX_PASSWORD_BYTES = 72
# bcrypt reads at most 72 bytes (bcrypt >= 5 refuses more), and a 50-character password can
# take 200 in UTF-8. So bcrypt is given a fixed-size digest of the password instead (as the
# bcrypt package's README suggests), keyed with the hash's own salt as passlib's
# bcrypt_sha256 does, so that a leaked plain SHA-256 of a password is no shortcut.
PREHASHED_PREFIX = "$bcrypt-sha256$"
_BCRYPT_SALT_LENGTH = 29  # "$2b$12$" and 22 characters of salt
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


def _prehashed(password: str, salt: bytes) -> bytes:
    digest = hmac.new(salt, password.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest)  # 44 bytes, and no NUL (where bcrypt would stop)


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
        hashed = await asyncio.to_thread(
            _timed, "hash", bcrypt.hashpw, _prehashed(password, salt), salt
        )
        return PREHASHED_PREFIX + hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        if hashed is not None and hashed.startswith(PREHASHED_PREFIX):
            stored = hashed.removeprefix(PREHASHED_PREFIX).encode()
            candidate = _prehashed(password, stored[:_BCRYPT_SALT_LENGTH])
        else:  # None, or a hash made before pre-hashing: bcrypt of the password itself
            stored = hashed.encode() if hashed is not None else b""
            candidate = password.encode()
        if not stored or len(candidate) > BCRYPT_MAX_PASSWORD_BYTES:
            await asyncio.to_thread(_timed, "verify", bcrypt.checkpw, b"x", self.dummy_hash)
            return False
        return await asyncio.to_thread(_timed, "verify", bcrypt.checkpw, candidate, stored)


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

    def subject_of(self, token: str, expected_type: TokenType) -> str:
        try:
            claims = jwt.decode(
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
        return subject
