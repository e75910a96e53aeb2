from __future__ import annotations

import uuid

import httpx

from tests.support.api import add_item, signup


async def test_item_lifecycle(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    item = await add_item(client, owner, "lamp")
    assert item["name"] == "lamp"
    assert item["user_pubid"] == owner.pubid

    path = f"/items/{item['pubid']}"
    assert (await client.get(path, headers=owner.auth)).json() == item

    updated = await client.put(
        path, json={"added": "2024-05-01T12:00:00+02:00"}, headers=owner.auth
    )
    assert updated.status_code == 200
    assert updated.json()["added"].startswith("2024-05-01T10:00:00")

    listed = await client.get("/items", headers=owner.auth)
    assert [entry["pubid"] for entry in listed.json()["items"]] == [item["pubid"]]

    assert (await client.delete(path, headers=owner.auth)).status_code == 204
    assert (await client.get(path, headers=owner.auth)).status_code == 404
    assert (await client.delete(path, headers=owner.auth)).status_code == 404


async def test_items_require_a_token(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    item = await add_item(client, owner, "x")
    for method, path in [
        ("GET", "/items"),
        ("GET", f"/items/{item['pubid']}"),
        ("DELETE", f"/items/{item['pubid']}"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
    unauthenticated = await client.post("/items", json={"name": "x", "user_pubid": owner.pubid})
    assert unauthenticated.status_code == 401


async def test_another_users_items_do_not_exist_for_you(client: httpx.AsyncClient) -> None:
    alice = await signup(client)
    mallory = await signup(client)
    secret = await add_item(client, alice, "secret")
    path = f"/items/{secret['pubid']}"

    assert (await client.get(path, headers=mallory.auth)).status_code == 404
    changed = await client.put(path, json={"added": "2020-01-01T00:00:00Z"}, headers=mallory.auth)
    assert changed.status_code == 404
    assert (await client.delete(path, headers=mallory.auth)).status_code == 404
    snooped = await client.get("/items", params={"user_pubid": alice.pubid}, headers=mallory.auth)
    assert snooped.json() == {"items": []}
    planted = await client.post(
        "/items", json={"name": "planted", "user_pubid": alice.pubid}, headers=mallory.auth
    )
    assert planted.status_code == 403

    # Alice's item is untouched by all of the above.
    mine = await client.get(path, headers=alice.auth)
    assert mine.status_code == 200
    assert mine.json()["added"] == secret["added"]
    alice_items = await client.get("/items", headers=alice.auth)
    assert [entry["name"] for entry in alice_items.json()["items"]] == ["secret"]


async def test_items_listing_paginates(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    names = [f"item{i}" for i in range(5)]
    for name in names:
        await add_item(client, owner, name)
    first = await client.get("/items", params={"limit": 3}, headers=owner.auth)
    rest = await client.get("/items", params={"limit": 3, "offset": 3}, headers=owner.auth)
    assert [i["name"] for i in first.json()["items"] + rest.json()["items"]] == names
    own_filter = await client.get(
        "/items", params={"user_pubid": owner.pubid, "limit": 500}, headers=owner.auth
    )
    assert len(own_filter.json()["items"]) == 5


async def test_unknown_item_is_404(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    response = await client.get(f"/items/{uuid.uuid4()}", headers=owner.auth)
    assert response.status_code == 404
    assert response.json() == {"detail": "Item not found"}
