"""Small helpers that speak the API the way a client would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct-horse-42"


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
    return Account(
        name=name,
        password=password,
        pubid=created.json()["pubid"],
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
    )


async def add_item(client: httpx.AsyncClient, account: Account, name: str) -> dict[str, Any]:
    response = await client.post(
        "/items", json={"name": name, "user_pubid": account.pubid}, headers=account.auth
    )
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item
