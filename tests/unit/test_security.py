from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

import bcrypt
import pytest

from service.core.errors import ServiceUnavailableError
from service.core.security import InvalidTokenError, PasswordHasher, TokenService
from service.core.settings import Settings


def _tokens(secret: str = "s" * 40) -> TokenService:
    return TokenService(secret, "aud", "iss", access_ttl_seconds=60, refresh_ttl_seconds=600)


def test_tokens_round_trip_and_keep_their_type() -> None:
    tokens = _tokens()
    subject, session_id, refresh_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    access = tokens.issue(subject, "access", session_id=session_id)
    claims = tokens.claims_of(access, "access")
    assert (claims.subject, claims.session_id) == (subject, session_id)
    refresh = tokens.issue(subject, "refresh", session_id=session_id, token_id=refresh_id)
    assert tokens.claims_of(refresh, "refresh").token_id == refresh_id
    with pytest.raises(InvalidTokenError):
        tokens.claims_of(access, "refresh")


def test_tokens_verify_with_the_same_secret_in_another_instance() -> None:
    """What every gunicorn worker does: its own TokenService, built from the same settings."""
    subject = uuid.uuid4()
    issued = _tokens().issue(subject, "refresh", session_id=uuid.uuid4())
    assert _tokens().claims_of(issued, "refresh").subject == subject
    with pytest.raises(InvalidTokenError):
        _tokens("t" * 40).claims_of(issued, "refresh")


async def test_hashing_runs_off_the_event_loop() -> None:
    """A cost-12 bcrypt hash takes ~0.25 s here. Run four while a ticker measures how late
    the event loop wakes it: on the loop, the lag would be at least one whole hash."""
    hasher = await PasswordHasher.create(Settings(bcrypt_rounds=12))
    try:
        started = time.perf_counter()
        hashed = await hasher.hash("warm-up-1")
        one_hash = time.perf_counter() - started
        worst_lag = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal worst_lag
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                worst_lag = max(worst_lag, time.perf_counter() - before - 0.005)

        ticking = asyncio.create_task(ticker())
        await asyncio.gather(*(hasher.hash(f"password-{i}") for i in range(4)))
        stop.set()
        await ticking
        assert worst_lag < one_hash / 2, (worst_lag, one_hash)
        assert await hasher.verify("warm-up-1", hashed)
        assert not await hasher.verify("wrong-1", hashed)
        assert not await hasher.verify("anything-1", None)
    finally:
        hasher.close()


async def test_admission_refuses_past_the_queue_timeout_and_admits_in_turn() -> None:
    settings = Settings(bcrypt_rounds=4, hash_concurrency=1, hash_queue_timeout_seconds=0.2)
    hasher = await PasswordHasher.create(settings)
    try:
        async with hasher.admitted():
            started = time.perf_counter()
            with pytest.raises(ServiceUnavailableError) as refused:
                async with hasher.admitted():
                    pytest.fail("admitted a second hash while the only slot was taken")
            waited = time.perf_counter() - started
        assert refused.value.reason == "hash_capacity"
        assert 0.15 < waited < 2.0, waited  # it waited its bound, then refused at once
        # The slot is free again: the next caller gets it without waiting.
        async with hasher.admitted():
            assert await hasher.verify("anything-1", None) is False
    finally:
        hasher.close()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="needs os.setpriority (POSIX)")
async def test_hashing_threads_run_at_a_lower_cpu_priority() -> None:
    hasher = await PasswordHasher.create(Settings(bcrypt_rounds=4, hash_thread_nice=7))
    try:
        loop = asyncio.get_running_loop()

        def own_nice() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        loop_nice = own_nice()
        thread_nice = await loop.run_in_executor(hasher.executor, own_nice)
    finally:
        hasher.close()
    assert own_nice() == loop_nice  # the event loop's thread keeps its priority
    assert thread_nice == min(19, loop_nice + 7)


async def test_passwords_of_any_byte_length_up_to_50_characters_hash_and_verify() -> None:
    """bcrypt reads 72 bytes at most; 50 four-byte characters are 200. The hasher gives bcrypt
    a digest instead, so such a password works and a change in its last character counts."""
    hasher = await PasswordHasher.create(Settings(bcrypt_rounds=4))
    long_password = "1a" + "\U0001f600" * 48
    hashed = await hasher.hash(long_password)
    assert hashed.startswith("$bcrypt-sha256$$2b$04$")
    assert len(hashed) <= 100  # users.password_hash is VARCHAR(100)
    assert await hasher.verify(long_password, hashed)
    assert not await hasher.verify(long_password[:-1] + "\U0001f601", hashed)
    assert not await hasher.verify(long_password[:-1], hashed)


async def test_hashes_made_before_prehashing_still_verify() -> None:
    hasher = await PasswordHasher.create(Settings(bcrypt_rounds=4))
    legacy = bcrypt.hashpw(b"passw0rd-legacy", bcrypt.gensalt(rounds=4)).decode()
    assert await hasher.verify("passw0rd-legacy", legacy)
    assert not await hasher.verify("passw0rd-other", legacy)
    assert not await hasher.verify("1a" + "\U0001f600" * 48, legacy)
