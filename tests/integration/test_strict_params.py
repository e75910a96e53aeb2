"""Query, path and form fields take exactly the spelling their schema states: no lax
coercion of "5.0" to 5, "yes" to true or a brace-wrapped string to a UUID."""

from __future__ import annotations

import httpx
import pytest

from tests.support.api import add_item, openapi_of, signup


@pytest.mark.parametrize(
    ("limit", "status"),
    [
        *[("5", 200), ("05", 200), ("500", 200)],
        *[("5.0", 422), ("+5", 422), (" 5", 422), ("5_0", 422), ("1e1", 422), ("0x5", 422)],
        *[("0", 422), ("501", 422)],
    ],
)
async def test_query_integers_are_plain_digits(
    client: httpx.AsyncClient, limit: str, status: int
) -> None:
    assert (await client.get("/users", params={"limit": limit})).status_code == status


async def test_page_bounds_are_in_the_schema(client: httpx.AsyncClient) -> None:
    parameters = (await openapi_of(client))["paths"]["/users"]["get"]["parameters"]
    schemas = {parameter["name"]: parameter["schema"] for parameter in parameters}
    assert (schemas["limit"]["minimum"], schemas["limit"]["maximum"]) == (1, 500)
    assert (schemas["offset"]["minimum"], schemas["offset"]["maximum"]) == (0, 1_000_000)


async def test_query_flags_are_true_or_false(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    path = f"/users/{account.pubid}"
    with_items = await client.get(path, params={"incl_items": "true"})
    assert with_items.status_code == 200
    assert with_items.json()["items"] == []
    without = await client.get(path, params={"incl_items": "false"})
    assert without.json()["items"] is None
    for lax in ["1", "0", "yes", "on", "t", "True", "FALSE", ""]:
        response = await client.get(path, params={"incl_items": lax})
        assert response.status_code == 422, lax


async def test_uuids_are_in_the_hyphenated_form_only(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    item = await add_item(client, owner, "spelled")
    pubid = item["pubid"]
    for spelling, status in [
        (pubid, 200),
        (pubid.upper(), 200),
        (pubid.replace("-", ""), 422),
        ("{" + pubid + "}", 422),
        ("urn:uuid:" + pubid, 422),
    ]:
        response = await client.get(f"/items/{spelling}", headers=owner.auth)
        assert response.status_code == status, spelling
        listed = await client.get("/items", params={"user_pubid": spelling}, headers=owner.auth)
        assert listed.status_code == status, spelling
        in_body = {"updates": [{"pubid": spelling, "added": "2024-05-01T12:00:00Z"}]}
        patched = await client.patch("/items", json=in_body, headers=owner.auth)
        assert patched.status_code == status, spelling
    not_canonical = owner.pubid.replace("-", "")
    created = await client.post(
        "/items", json={"name": "x", "user_pubid": not_canonical}, headers=owner.auth
    )
    assert created.status_code == 422


async def test_empty_refresh_token_is_401_like_any_invalid_one(client: httpx.AsyncClient) -> None:
    for form in [{"refresh_token": ""}, {}]:
        response = await client.post("/auth/refresh", data=form)
        assert response.status_code == 401, form
        assert response.json() == {"detail": "Invalid or expired refresh token"}
    form_schema = (await openapi_of(client))["paths"]["/auth/refresh"]["post"]["requestBody"]
    assert "refresh_token" not in str(form_schema.get("required", []))


async def test_login_form_schema_says_that_empty_fields_are_refused(
    client: httpx.AsyncClient,
) -> None:
    """FastAPI reads an empty form field as a missing one; the schema says so (minLength 1)."""
    openapi = await openapi_of(client)
    body = openapi["paths"]["/auth/token"]["post"]["requestBody"]["content"]
    reference = body["application/x-www-form-urlencoded"]["schema"]["$ref"]
    form = openapi["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert form["properties"]["username"]["minLength"] == 1
    assert form["properties"]["password"]["minLength"] == 1
    assert set(form["required"]) == {"username", "password"}
    account = await signup(client)
    for fields in [
        {"username": "", "password": account.password},
        {"username": account.name, "password": ""},
    ]:
        assert (await client.post("/auth/token", data=fields)).status_code == 422
