"""Small helpers that speak the API the way a client would: accounts, items, logins from a
chosen client address, and the service's own OpenAPI schema as a validator."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema_rs

PASSWORD = "correct-horse-42"
WRONG_PASSWORD = "wrong-password-1"
_NEXT = itertools.count(1)


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class Account:
    name: str
    password: str
    pubid: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def signup(client: httpx.AsyncClient, **extra: Any) -> Account:
    name = extra.pop("name", unique_name())
    password = extra.pop("password", PASSWORD)
    created = await client.post("/users", json={"name": name, "password": password, **extra})
    assert created.status_code == 201, created.text
    tokens = await client.post("/auth/token", data={"username": name, "password": password})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    pubid = created.json()["pubid"]
    return Account(name, password, pubid, body["access_token"], body["refresh_token"])


async def add_item(client: httpx.AsyncClient, account: Account, name: str) -> dict[str, Any]:
    response = await client.post(
        "/items", json={"name": name, "user_pubid": account.pubid}, headers=account.auth
    )
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item


def fresh_address() -> str:
    """A documentation-range address (RFC 5737) no other test uses, as a client would be."""
    number = next(_NEXT) + random.randrange(1 << 16) * 256
    return f"198.51.{(number >> 8) % 256}.{number % 256}"


async def attempt(
    client: httpx.AsyncClient, username: str, password: str, address: str
) -> httpx.Response:
    """A login from `address`: under gunicorn, uvicorn trusts X-Forwarded-For from loopback
    (FORWARDED_ALLOW_IPS)."""
    return await client.post(
        "/auth/token",
        data={"username": username, "password": password},
        headers={"X-Forwarded-For": address, "Connection": "close"},
    )


async def room_in_window() -> None:
    """Counters live in fixed windows aligned to the clock (date_bin from 2000-01-01, a
    multiple of 900 s in Unix time). A test that counts up to a limit must not straddle a
    window's end, where the counts start again from zero: wait for the next window if this
    one has less than a minute left."""
    left = 900 - time.time() % 900
    if left < 60:
        await asyncio.sleep(left + 0.5)


async def openapi_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def body_validator(openapi: dict[str, Any], method: str, path: str) -> jsonschema_rs.Validator:
    """Validates a JSON request body the way schemathesis does (jsonschema-rs, ECMA-262
    regexes, formats checked)."""
    schema = openapi["paths"][path][method]["requestBody"]["content"]["application/json"]
    root = {**schema["schema"], "components": openapi.get("components", {})}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)
