"""Login attempts from a chosen client address, and the counters that throttling keeps."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import httpx

WRONG_PASSWORD = "wrong-password-1"
_NEXT = itertools.count(1)


def fresh_address() -> str:
    """A documentation-range address (RFC 5737) no other test uses, as a client would be."""
    number = next(_NEXT) + random.randrange(1 << 16) * 256
    return f"198.51.{(number >> 8) % 256}.{number % 256}"


def from_address(address: str) -> dict[str, str]:
    """Under gunicorn, uvicorn trusts X-Forwarded-For from loopback (FORWARDED_ALLOW_IPS)."""
    return {"X-Forwarded-For": address}


async def attempt(
    client: httpx.AsyncClient, username: str, password: str, address: str
) -> httpx.Response:
    return await client.post(
        "/auth/token",
        data={"username": username, "password": password},
        headers={**from_address(address), "Connection": "close"},
    )


async def room_in_window(needed_seconds: float = 60, window_seconds: int = 900) -> None:
    """Counters live in fixed windows aligned to the clock (date_bin from 2000-01-01, a
    multiple of 900 s in Unix time). A test that counts up to a limit must not straddle a
    window's end, where the counts start again from zero: wait for the next window if this
    one has less than `needed_seconds` left."""
    left = window_seconds - time.time() % window_seconds
    if left < needed_seconds:
        await asyncio.sleep(left + 0.5)
