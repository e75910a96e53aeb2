from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from service.items.models import Item
from service.users.models import User
from tests.support.api import PASSWORD, add_item, signup, unique_name


async def test_signup_returns_public_fields_only(client: httpx.AsyncClient) -> None:
    name = unique_name()
    response = await client.post(
        "/users", json={"name": name, "password": PASSWORD, "fullname": "Ada Lovelace"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"pubid", "name", "fullname"}
    assert body["name"] == name
    assert body["fullname"] == "Ada Lovelace"
    uuid.UUID(body["pubid"])


async def test_taken_name_is_409(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    again = await client.post("/users", json={"name": account.name, "password": PASSWORD})
    assert again.status_code == 409
    assert again.json() == {"detail": "User name already taken"}


async def test_get_user_with_and_without_items(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    first = await add_item(client, account, "first")
    second = await add_item(client, account, "second")

    plain = await client.get(f"/users/{account.pubid}")
    assert plain.status_code == 200
    assert plain.json()["items"] is None

    with_items = await client.get(f"/users/{account.pubid}", params={"incl_items": "true"})
    assert [item["pubid"] for item in with_items.json()["items"]] == [
        first["pubid"],
        second["pubid"],
    ]


async def test_unknown_user_is_404_and_malformed_id_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/users/{uuid.uuid4()}")).status_code == 404
    malformed = await client.get("/users/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["path", "pubid"]


async def test_listing_is_paginated_in_a_stable_order(client: httpx.AsyncClient) -> None:
    created = [(await signup(client)).pubid for _ in range(3)]
    everyone: list[str] = []
    offset = 0
    while True:
        page = await client.get("/users", params={"limit": 2, "offset": offset})
        assert page.status_code == 200
        users = page.json()["users"]
        assert len(users) <= 2
        if not users:
            break
        everyone += [user["pubid"] for user in users]
        offset += 2
    assert len(everyone) == len(set(everyone))
    positions = [everyone.index(pubid) for pubid in created]
    assert positions == sorted(positions)
    default_page = await client.get("/users")
    assert len(default_page.json()["users"]) <= 50


async def test_update_requires_own_token(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    other = await signup(client)
    path = f"/users/{owner.pubid}"

    assert (await client.put(path, json={"fullname": "x"})).status_code == 401
    forbidden = await client.put(path, json={"fullname": "x"}, headers=other.auth)
    assert forbidden.status_code == 403
    updated = await client.put(path, json={"fullname": "New Name"}, headers=owner.auth)
    assert updated.status_code == 200
    assert updated.json()["fullname"] == "New Name"
    assert (await client.get(path)).json()["fullname"] == "New Name"


async def test_delete_cascades_to_items(client: httpx.AsyncClient, database_url: str) -> None:
    owner = await signup(client)
    other = await signup(client)
    await add_item(client, owner, "doomed")
    path = f"/users/{owner.pubid}"

    assert (await client.delete(path)).status_code == 401
    assert (await client.delete(path, headers=other.auth)).status_code == 403
    assert (await client.delete(path, headers=owner.auth)).status_code == 204
    assert (await client.get(path)).status_code == 404

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            owner_items = await connection.scalar(
                select(func.count())
                .select_from(Item)
                .outerjoin(User, Item.user_id == User.id)
                .where(User.id.is_(None))
            )
    finally:
        await engine.dispose()
    assert owner_items == 0


async def test_signup_with_initial_items_is_one_transaction(client: httpx.AsyncClient) -> None:
    name = unique_name()
    response = await client.post(
        "/users", json={"name": name, "password": PASSWORD, "initial_items": ["a", "b"]}
    )
    assert response.status_code == 201
    user = await client.get(f"/users/{response.json()['pubid']}", params={"incl_items": True})
    assert [item["name"] for item in user.json()["items"]] == ["a", "b"]
