"""Password hashing (admitted, bounded, off the event loop) and JWT access/refresh tokens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

import bcrypt
import jwt

from service.core.errors import ServiceUnavailableError
from service.core.metrics import (
    HASH_ADMISSION_WAIT,
    HASH_ADMISSIONS,
    PASSWORD_HASH_DURATION,
)
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
    """Runs in the hashing thread, so the histogram sees bcrypt's time, not the queueing."""
    started = time.perf_counter()
    try:
        return function(*args)
    finally:
        PASSWORD_HASH_DURATION.labels(operation=operation).observe(time.perf_counter() - started)


def _prehashed(password: str, salt: bytes) -> bytes:
    digest = hmac.new(salt, password.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest)  # 44 bytes, and no NUL (where bcrypt would stop)


def _lower_thread_priority(increment: int) -> None:
    """On Linux a thread id is a valid PRIO_PROCESS target and renices that thread alone:
    the event loop keeps its priority, so reads stay fast while hashes wait for the CPU."""
    if increment and hasattr(os, "setpriority"):
        thread = threading.get_native_id()
        # If not permitted, hashing still works, at normal priority.
        with contextlib.suppress(OSError):
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, current + increment))


@dataclass(frozen=True, slots=True)
class PasswordHasher:
    """bcrypt on a worker's own small thread pool, behind an admission gate.

    `admitted()` waits at most `queue_timeout` for one of `concurrency` slots and otherwise
    refuses at once with 503: an unbounded queue of ~0.25 s CPU jobs only makes every
    request late. Callers enter it before touching the database."""

    rounds: int
    dummy_hash: bytes
    executor: ThreadPoolExecutor
    slots: asyncio.Semaphore
    queue_timeout: float
    retry_after_seconds: int

    @classmethod
    async def create(cls, settings: Settings) -> PasswordHasher:
        executor = ThreadPoolExecutor(
            max_workers=settings.hash_concurrency,
            thread_name_prefix="bcrypt",
            initializer=_lower_thread_priority,
            initargs=(settings.hash_thread_nice,),
        )
        salt = bcrypt.gensalt(rounds=settings.bcrypt_rounds)
        # The dummy hash lets a login for an unknown user cost the same as a wrong password.
        dummy = await asyncio.get_running_loop().run_in_executor(
            executor, bcrypt.hashpw, uuid.uuid4().bytes, salt
        )
        return cls(
            rounds=settings.bcrypt_rounds,
            dummy_hash=dummy,
            executor=executor,
            slots=asyncio.Semaphore(settings.hash_concurrency),
            queue_timeout=settings.hash_queue_timeout_seconds,
            retry_after_seconds=settings.retry_after_seconds,
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self.slots.acquire()
        except TimeoutError:
            HASH_ADMISSIONS.labels(outcome="rejected").inc()
            raise ServiceUnavailableError("hash_capacity") from None
        finally:
            HASH_ADMISSION_WAIT.observe(time.perf_counter() - started)
        HASH_ADMISSIONS.labels(outcome="admitted").inc()
        try:
            yield
        finally:
            self.slots.release()

    async def _run(self, operation: str, function: Callable[[bytes, bytes], T], *args: bytes) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, _timed, operation, function, *args)

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(rounds=self.rounds)
        hashed = await self._run("hash", bcrypt.hashpw, _prehashed(password, salt), salt)
        return PREHASHED_PREFIX + hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        if hashed is not None and hashed.startswith(PREHASHED_PREFIX):
            stored = hashed.removeprefix(PREHASHED_PREFIX).encode()
            candidate = _prehashed(password, stored[:_BCRYPT_SALT_LENGTH])
        else:  # None, or a hash made before pre-hashing: bcrypt of the password itself
            stored = hashed.encode() if hashed is not None else b""
            candidate = password.encode()
        if not stored or len(candidate) > BCRYPT_MAX_PASSWORD_BYTES:
            await self._run("verify", bcrypt.checkpw, b"x", self.dummy_hash)
            return False
        return await self._run("verify", bcrypt.checkpw, candidate, stored)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says: whose it is, which session, and (refresh) which refresh."""

    subject: uuid.UUID
    session_id: uuid.UUID
    token_id: uuid.UUID | None


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

    def issue(
        self,
        subject: uuid.UUID,
        token_type: TokenType,
        *,
        session_id: uuid.UUID,
        token_id: uuid.UUID | None = None,
    ) -> str:
        now = int(time.time())
        ttl = self.access_ttl_seconds if token_type == "access" else self.refresh_ttl_seconds
        claims = {
            "sub": str(subject),
            "sid": str(session_id),
            "type": token_type,
            "aud": self.audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": str(token_id or uuid.uuid4()),
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)

    def claims_of(self, token: str, expected_type: TokenType) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[JWT_ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "type", "sid"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if claims.get("type") != expected_type:
            raise InvalidTokenError(f"expected a {expected_type} token")
        token_id = claims.get("jti")
        if expected_type == "refresh" and token_id is None:
            raise InvalidTokenError("a refresh token must name its refresh (jti)")
        try:
            return TokenClaims(
                subject=uuid.UUID(str(claims["sub"])),
                session_id=uuid.UUID(str(claims["sid"])),
                token_id=None if token_id is None else uuid.UUID(str(token_id)),
            )
        except ValueError:
            raise InvalidTokenError("malformed subject, session or token id") from None
