"""Seed once, through the API: users with items, a token per user, and the Lua table that
hands ids and tokens to wrk."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

SEED_PASSWORD = "benchpass1234"


@dataclass(frozen=True, slots=True)
class SeededUser:
    name: str
    pubid: str
    token: str
    items: tuple[str, ...]


def seed(base_url: str, *, users: int, items_per_user: int) -> list[SeededUser]:
    """Create `users` users (each with its items in the same request), log each one in and
    list its items. Names carry a random prefix, so seeding an existing database works."""
    prefix = "b" + uuid.uuid4().hex[:6]
    seeded = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for index in range(users):
            name = f"{prefix}_u{index:04d}"
            created = client.post(
                "/users",
                json={
                    "name": name,
                    "password": SEED_PASSWORD,
                    "fullname": f"Bench User {index}",
                    "initial_items": [f"item-{n}" for n in range(items_per_user)],
                },
            )
            created.raise_for_status()
            login = client.post("/auth/token", data={"username": name, "password": SEED_PASSWORD})
            login.raise_for_status()
            token = login.json()["access_token"]
            listed = client.get(
                "/items", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"}
            )
            listed.raise_for_status()
            items = tuple(item["pubid"] for item in listed.json()["items"])
            seeded.append(SeededUser(name, created.json()["pubid"], token, items))
    return seeded


def _lua_string(value: str) -> str:
    if not all(ch.isalnum() or ch in "-_." for ch in value):
        raise ValueError(f"unexpected characters in {value!r}")
    return f'"{value}"'


def write_lua_data(users: list[SeededUser], path: Path) -> Path:
    lines = ["return {"]
    for user in users:
        items = ", ".join(_lua_string(item) for item in user.items)
        lines.append(
            f"  {{pubid = {_lua_string(user.pubid)}, token = {_lua_string(user.token)}, "
            f"items = {{{items}}}}},"
        )
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    return path
