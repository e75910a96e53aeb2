"""Response content checks, shared by the Locust scenarios and the sample-data seeder. Each
returns None when the payload is right, or the reason it is not (Locust's failure message).

Pure functions over decoded JSON: no Locust or gevent import, so they can be reused anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from functools import partial
from typing import Any

Check = Callable[[Any], str | None]
Fields = dict[str, Callable[[Any], object]]  # field -> is its value valid (truthy)?


def _uuid(value: object) -> bool:
    try:
        return isinstance(value, str) and bool(uuid.UUID(value))
    except ValueError:
        return False


def _aware(value: object) -> datetime | None:
    """An ISO 8601 timestamp with a time zone, or None if it is not one."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _jwt(value: object) -> bool:
    return isinstance(value, str) and value.count(".") == 2


USER: Fields = {"pubid": _uuid, "name": _text, "fullname": lambda v: isinstance(v, str | None)}
ITEM: Fields = {"pubid": _uuid, "name": _text, "added": _aware, "user_pubid": _uuid}
TOKENS: Fields = {"access_token": _jwt, "refresh_token": _jwt}
TOKENS["token_type"] = lambda v: str(v).lower() == "bearer"


def _object_problem(what: str, body: object, fields: Fields, **expected: object) -> str | None:
    """`body` is an object whose `fields` are valid and hold the `expected` values."""
    if not isinstance(body, Mapping):
        return f"{what}: expected a JSON object, got {type(body).__name__}"
    for key, valid in fields.items():
        if key not in body or not valid(body[key]):
            return f"{what}: {key} missing or not valid: {body.get(key)!r}"
    for key, value in expected.items():
        if (_aware(body[key]) if isinstance(value, datetime) else body[key]) != value:
            return f"{what}: {key} {body[key]!r} != {value!r}"
    return None


def user_problem(body: object, **expected: object) -> str | None:
    """A user object {pubid, name, fullname} with the `expected` values."""
    return _object_problem("user", body, USER, **expected)


def item_problem(body: object, *, owner: str, **expected: object) -> str | None:
    """An item object {pubid, name, added, user_pubid}: `owner`'s, with the `expected` values."""
    return _object_problem("item", body, ITEM, user_pubid=owner, **expected)


def tokens_problem(body: object) -> str | None:
    return _object_problem("tokens", body, TOKENS)


def detail_problem(body: object, *, contains: str) -> str | None:
    """An error body {"detail": "..."} that says what was expected."""
    says: Fields = {"detail": lambda v: isinstance(v, str) and contains.lower() in v.lower()}
    return _object_problem(f"error (expected {contains!r})", body, says)


def _entries(body: object, key: str, problem: Check) -> list[Any] | str:
    """The list under `key` if every entry passes `problem`, else the first reason."""
    if not isinstance(body, Mapping) or not isinstance(body.get(key), list):
        return f"{key}: expected a JSON object with a list under {key!r}"
    return next(filter(None, map(problem, body[key])), body[key])


def users_page_problem(body: object, *, limit: int) -> str | None:
    users = _entries(body, "users", user_problem)
    if isinstance(users, str):
        return users
    if len(users) > limit:
        return f"users: {len(users)} entries for limit {limit}"
    if len({user["pubid"] for user in users}) != len(users):
        return "users: the same user twice on one page"
    return None


def items_page_problem(
    body: object,
    *,
    owner: str,
    expected: Collection[str] | None = None,
    count: int | None = None,
    at_least: int = 0,
) -> str | None:
    """The caller's items: exactly the `expected` pubids, or `count` (`at_least`) of them."""
    items = _entries(body, "items", partial(item_problem, owner=owner))
    if isinstance(items, str):
        return items
    got = {item["pubid"] for item in items}
    if expected is not None and got != set(expected):
        missing, extra = set(expected) - got, got - set(expected)
        return f"items: {len(missing)} missing, {len(extra)} unexpected (of {len(got)})"
    if count is not None and len(items) != count:
        return f"items: {len(items)} listed, expected {count}"
    if len(items) < at_least:
        return f"items: {len(items)} listed, expected at least {at_least}"
    return None


def user_detail_problem(
    body: object,
    *,
    pubid: str,
    item_count: int | None = None,
    item_count_at_least: int = 0,
    **user: object,
) -> str | None:
    """GET /users/{pubid}?incl_items=true: the user (with the `user` values) and a list of its
    own items."""
    return user_problem(body, pubid=pubid, **user) or items_page_problem(
        body, owner=pubid, count=item_count, at_least=item_count_at_least
    )
