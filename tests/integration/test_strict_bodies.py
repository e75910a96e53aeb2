"""Bodies: the service accepts exactly what its OpenAPI schema allows. Each case is checked
twice: against the schema (as a generated client would) and against the service."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.api import add_item, body_validator, openapi_of, signup, unique_name

# (value of `added`, does the schema allow it)
TIMESTAMPS: list[tuple[Any, bool]] = [
    ("2024-05-01T12:00:00Z", True),
    ("2024-05-01t12:00:00z", True),  # RFC 3339 allows lower case
    ("2024-05-01T12:00:00-00:00", True),
    ("2024-05-01T12:00:00.1234567+05:30", True),  # stored to the microsecond
    ("0002-01-01T00:00:00+23:59", True),  # the earliest instant: 0001-12-31T00:01Z
    ("9998-12-31T23:59:59-23:59", True),  # the latest: 9999-01-01T23:58:59Z
    (0, False),  # lax pydantic: 1970-01-01
    (1.5, False),
    (True, False),
    (None, False),
    ("0", False),  # lax pydantic: a Unix time in a string
    ("1700000000", False),
    ("2024-05-01 12:00:00Z", False),
    ("2024-05-01T12:00Z", False),
    ("2024-05-01T12:00:00+0100", False),
    ("2024-05-01T12:00:00", False),  # no offset
    ("2024-05-01T12:00:00,5Z", False),
    ("2024-02-30T12:00:00Z", False),
    ("2024-05-01T23:59:60Z", False),  # a leap second: RFC 3339 has it, Python does not
    ("0001-01-01T00:00:00+01:00", False),  # before year 1 in UTC
    ("9999-12-31T23:59:59-01:00", False),  # after year 9999 in UTC
]


def _verdicts(cases: list[tuple[Any, bool]], schema_allows: Any) -> list[str]:
    """The cases where the schema's verdict is not the one this test expects."""
    return [f"{value!r}: schema {not ok}" for value, ok in cases if schema_allows(value) != ok]


async def test_added_is_accepted_exactly_when_the_schema_allows_it(
    client: httpx.AsyncClient,
) -> None:
    openapi = await openapi_of(client)
    put_schema = body_validator(openapi, "put", "/items/{pubid}")
    patch_schema = body_validator(openapi, "patch", "/items")
    owner = await signup(client)
    item = await add_item(client, owner, "dated")
    path = f"/items/{item['pubid']}"
    assert not _verdicts(TIMESTAMPS, lambda value: put_schema.is_valid({"added": value}))

    mismatches = []
    for added, allowed in TIMESTAMPS:
        before = (await client.get(path, headers=owner.auth)).json()["added"]
        put = await client.put(path, json={"added": added}, headers=owner.auth)
        update = {"pubid": item["pubid"], "added": added}
        assert patch_schema.is_valid({"updates": [update]}) == allowed, added
        patch = await client.patch("/items", json={"updates": [update]}, headers=owner.auth)
        expected = 200 if allowed else 422
        if (put.status_code, patch.status_code) != (expected, expected):
            mismatches.append(f"{added!r}: PUT {put.status_code}, PATCH {patch.status_code}")
        after = (await client.get(path, headers=owner.auth)).json()["added"]
        if not allowed and after != before:
            mismatches.append(f"{added!r} was refused but changed added to {after}")
    assert not mismatches, mismatches


async def test_extreme_offsets_are_stored_as_their_utc_instant(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    item = await add_item(client, owner, "extreme")
    path = f"/items/{item['pubid']}"
    for sent, stored in [
        ("0002-01-01T00:00:00+23:59", "0001-12-31T00:01:00Z"),
        ("9998-12-31T23:59:59-23:59", "9999-01-01T23:58:59Z"),
        ("2024-05-01T12:00:00.1234567+05:30", "2024-05-01T06:30:00.123456Z"),
    ]:
        assert (await client.put(path, json={"added": sent}, headers=owner.auth)).status_code == 200
        assert (await client.get(path, headers=owner.auth)).json()["added"] == stored


PASSWORDS: list[tuple[str, bool]] = [
    ("passw0rd", True),
    ("1a" + "\U0001f600" * 48, True),  # 50 characters, 194 bytes: past bcrypt's 72
    ("пароль-1-Z", True),
    ("a1" + "x" * 48, True),
    ("a1" + "x" * 49, False),  # 51 characters
    ("ééééééé1", False),  # no letter A-Z/a-z: the schema's classes are ASCII
    ("abcdefg²", False),  # "²" is no digit 0-9
    ("abcdefgh", False),
    ("12345678", False),
    ("abc1\x00xyz", False),
    ("abc1\nxyz", True),
]


async def test_passwords_are_accepted_exactly_when_the_schema_allows_them(
    client: httpx.AsyncClient,
) -> None:
    schema = body_validator(await openapi_of(client), "post", "/users")

    def body(password: str) -> dict[str, str]:
        return {"name": unique_name(), "password": password}

    assert not _verdicts(PASSWORDS, lambda password: schema.is_valid(body(password)))
    mismatches = []
    for password, allowed in PASSWORDS:
        sent = body(password)
        created = await client.post("/users", json=sent)
        if created.status_code != (201 if allowed else 422):
            mismatches.append(f"{password!r}: {created.status_code} {created.text[:120]}")
        elif allowed:
            form = {"username": sent["name"], "password": password}
            login = await client.post("/auth/token", data=form)
            if login.status_code != 200:
                mismatches.append(f"{password!r}: signed up, login answered {login.status_code}")
    assert not mismatches, mismatches


# (name, does the schema allow it, the name stored); "{u}" is 6 characters unique to a run.
NAMES: list[tuple[str, bool, str | None]] = [
    ("  b{u}  ", True, "b{u}"),
    ("\ufeffz{u}", True, "\ufeffz{u}"),  # U+FEFF is no space to Python, so it is kept
    ("{u}" + "x" * 24, True, "{u}" + "x" * 24),
    ("{u}" + "x" * 25, False, None),  # 31 characters
    (" " * 5 + "{u}" + "x" * 23, False, None),  # 34 characters: the limit is on what is sent
    ("\u3000", False, None),  # only a space (ideographic)
    ("\x1c\x1d", False, None),  # Python counts these as spaces: so does the schema
    ("", False, None),
]


async def test_names_are_accepted_exactly_when_the_schema_allows_them(
    client: httpx.AsyncClient,
) -> None:
    schema = body_validator(await openapi_of(client), "post", "/users")
    unique = unique_name("")[-6:]
    mismatches = []
    for template, allowed, stored in NAMES:
        body = {"name": template.format(u=unique), "password": "passw0rd"}
        if schema.is_valid(body) != allowed:
            mismatches.append(f"{template!r}: the schema says {not allowed}")
        created = await client.post("/users", json=body)
        if created.status_code != (201 if allowed else 422):
            mismatches.append(f"{template!r}: {created.status_code} {created.text[:120]}")
        elif stored is not None and created.json()["name"] != stored.format(u=unique):
            mismatches.append(f"{template!r} stored as {created.json()['name']!r}")
    assert not mismatches, mismatches


async def test_fullname_length_is_counted_as_sent(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    path = f"/users/{account.pubid}"
    padded = await client.put(path, json={"fullname": " " * 101}, headers=account.auth)
    assert padded.status_code == 422
    trimmed = await client.put(path, json={"fullname": "  Ada L.  "}, headers=account.auth)
    assert trimmed.status_code == 200
    assert trimmed.json()["fullname"] == "Ada L."
