from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.api import PASSWORD, signup, unique_name


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x" * 31, "password": PASSWORD}, "name"),
        ({"name": "   ", "password": PASSWORD}, "name"),
        ({"name": "nul\x00byte", "password": PASSWORD}, "name"),
        ({"name": "ok", "password": "short1"}, "password"),
        ({"name": "ok", "password": "noDigitsAtAll"}, "password"),
        ({"name": "ok", "password": "1234567890"}, "password"),
        ({"name": "ok", "password": "a1" + "x" * 49}, "password"),
        ({"name": "ok", "password": PASSWORD, "role": "admin"}, "role"),
        ({"name": "ok", "password": PASSWORD, "fullname": "f" * 101}, "fullname"),
        ({"password": PASSWORD}, "name"),
    ],
)
async def test_signup_validation(
    client: httpx.AsyncClient, payload: dict[str, str], field: str
) -> None:
    response = await client.post("/users", json=payload)
    assert response.status_code == 422, response.text
    assert any(error["loc"][-1] == field for error in response.json()["detail"])


async def test_unicode_and_injection_looking_names_are_stored_literally(
    client: httpx.AsyncClient,
) -> None:
    for name in ["Zoë 🐘 Łódź", "'; DROP TABLE users; --", "x' OR '1'='1"]:
        unique = f"{name}{unique_name('')[:8]}"[:30]
        created = await client.post("/users", json={"name": unique, "password": PASSWORD})
        assert created.status_code == 201, created.text
        fetched = await client.get(f"/users/{created.json()['pubid']}")
        assert fetched.json()["name"] == unique


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_wrong_content_type_is_a_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users",
        content=b'{"name": "x", "password": "abcdefg1"}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code in {415, 422}
    assert "detail" in response.json()


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"name": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    declared = await client.post(
        "/users", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json() == {"detail": "Request body too large"}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536

    streamed = await client.post(
        "/users", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": -1},
        {"limit": 10**30},
        {"offset": -1},
        {"offset": 10**12},
        {"limit": "abc"},
    ],
)
async def test_absurd_pagination_is_422(
    client: httpx.AsyncClient, params: dict[str, int | str]
) -> None:
    response = await client.get("/users", params=params)
    assert response.status_code == 422


async def test_item_input_validation(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    bad_bodies = [
        {"name": "x", "user_pubid": "not-a-uuid"},
        {"name": "", "user_pubid": owner.pubid},
        {"name": "x" * 31, "user_pubid": owner.pubid},
    ]
    for body in bad_bodies:
        response = await client.post("/items", json=body, headers=owner.auth)
        assert response.status_code == 422, body
    created = await client.post(
        "/items", json={"name": "ok", "user_pubid": owner.pubid}, headers=owner.auth
    )
    path = f"/items/{created.json()['pubid']}"
    for added in ["2024-01-01T00:00:00", "yesterday", "0001-01-01T00:00:00+01:00"]:
        response = await client.put(path, json={"added": added}, headers=owner.auth)
        assert response.status_code == 422, added
    assert (await client.get("/items/12345", headers=owner.auth)).status_code == 422


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    wrong_method = await client.patch("/users")
    assert wrong_method.status_code == 405
    assert "detail" in wrong_method.json()
