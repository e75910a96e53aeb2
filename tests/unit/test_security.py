from __future__ import annotations

import asyncio
import time

import bcrypt
import pytest

from service.core.security import InvalidTokenError, PasswordHasher, TokenService


def _tokens(secret: str = "s" * 40) -> TokenService:
    return TokenService(secret, "aud", "iss", access_ttl_seconds=60, refresh_ttl_seconds=600)


def test_tokens_round_trip_and_keep_their_type() -> None:
    tokens = _tokens()
    access = tokens.issue("subject-1", "access")
    assert tokens.subject_of(access, "access") == "subject-1"
    with pytest.raises(InvalidTokenError):
        tokens.subject_of(access, "refresh")


def test_tokens_verify_with_the_same_secret_in_another_instance() -> None:
    """What every gunicorn worker does: its own TokenService, built from the same settings."""
    issued = _tokens().issue("subject-2", "refresh")
    assert _tokens().subject_of(issued, "refresh") == "subject-2"
    with pytest.raises(InvalidTokenError):
        _tokens("t" * 40).subject_of(issued, "refresh")


async def test_hashing_runs_off_the_event_loop() -> None:
    """A cost-12 bcrypt hash takes ~0.25 s here. Run four while a ticker measures how late
    the event loop wakes it: on the loop, the lag would be at least one whole hash."""
    hasher = await PasswordHasher.create(12)
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


async def test_passwords_of_any_byte_length_up_to_50_characters_hash_and_verify() -> None:
    """bcrypt reads 72 bytes at most; 50 four-byte characters are 200. The hasher gives bcrypt
    a digest instead, so such a password works and a change in its last character counts."""
    hasher = await PasswordHasher.create(4)
    long_password = "1a" + "\U0001f600" * 48
    hashed = await hasher.hash(long_password)
    assert hashed.startswith("$bcrypt-sha256$$2b$04$")
    assert len(hashed) <= 100  # users.password_hash is VARCHAR(100)
    assert await hasher.verify(long_password, hashed)
    assert not await hasher.verify(long_password[:-1] + "\U0001f601", hashed)
    assert not await hasher.verify(long_password[:-1], hashed)


async def test_hashes_made_before_prehashing_still_verify() -> None:
    hasher = await PasswordHasher.create(4)
    legacy = bcrypt.hashpw(b"passw0rd-legacy", bcrypt.gensalt(rounds=4)).decode()
    assert await hasher.verify("passw0rd-legacy", legacy)
    assert not await hasher.verify("passw0rd-other", legacy)
    assert not await hasher.verify("1a" + "\U0001f600" * 48, legacy)
