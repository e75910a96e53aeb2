"""Response content checks, shared by every scenario. Each returns None when the payload is
right, or the reason it is not (that reason becomes Locust's failure message).

Pure functions over decoded JSON: no Locust or gevent import, so they can be tested and
reused anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import Any


def is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def parse_aware(value: object) -> datetime | None:
    """An ISO 8601 timestamp with a time zone, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _object(body: object, what: str) -> tuple[Mapping[str, Any] | None, str | None]:
    if not isinstance(body, Mapping):
        return None, f"{what}: expected a JSON object, got {type(body).__name__}"
    return body, None


def user_problem(
    body: object,
    *,
    name: str | None = None,
    pubid: str | None = None,
    fullname: str | bool | None = False,
) -> str | None:
    """A user object {pubid, name, fullname}; `fullname=False` means "any value"."""
    return next(_user_problems(body, name=name, pubid=pubid, fullname=fullname), None)


def _user_problems(
    body: object, *, name: str | None, pubid: str | None, fullname: str | bool | None
) -> Iterator[str]:
    user, problem = _object(body, "user")
    if user is None:
        yield str(problem)
        return
    if not is_uuid(user.get("pubid")):
        yield f"user: pubid is not a UUID: {user.get('pubid')!r}"
    if not isinstance(user.get("name"), str) or not user["name"]:
        yield f"user: name missing or empty: {user.get('name')!r}"
    if "fullname" not in user or not isinstance(user["fullname"], str | None):
        yield f"user: fullname missing or not a string: {user.get('fullname')!r}"
    if name is not None and user["name"] != name:
        yield f"user: name {user['name']!r} != {name!r}"
    if pubid is not None and user["pubid"] != pubid:
        yield f"user: pubid {user['pubid']} != {pubid}"
    if fullname is not False and user["fullname"] != fullname:
        yield f"user: fullname {user['fullname']!r} != {fullname!r}"


def item_problem(
    body: object,
    *,
    name: str | None = None,
    pubid: str | None = None,
    owner: str | None = None,
    added: datetime | None = None,
) -> str | None:
    return next(_item_problems(body, name=name, pubid=pubid, owner=owner, added=added), None)


def _item_problems(
    body: object,
    *,
    name: str | None,
    pubid: str | None,
    owner: str | None,
    added: datetime | None,
) -> Iterator[str]:
    item, problem = _object(body, "item")
    if item is None:
        yield str(problem)
        return
    if not is_uuid(item.get("pubid")):
        yield f"item: pubid is not a UUID: {item.get('pubid')!r}"
    if not isinstance(item.get("name"), str) or not item["name"]:
        yield f"item: name missing or empty: {item.get('name')!r}"
    stamp = parse_aware(item.get("added"))
    if stamp is None:
        yield f"item: added is not an aware ISO timestamp: {item.get('added')!r}"
    if not is_uuid(item.get("user_pubid")):
        yield f"item: user_pubid is not a UUID: {item.get('user_pubid')!r}"
    if name is not None and item["name"] != name:
        yield f"item: name {item['name']!r} != {name!r}"
    if pubid is not None and item["pubid"] != pubid:
        yield f"item: pubid {item['pubid']} != {pubid}"
    if owner is not None and item["user_pubid"] != owner:
        yield f"item: belongs to {item['user_pubid']}, expected {owner}"
    if added is not None and stamp != added:
        yield f"item: added {item['added']} != {added.isoformat()}"


def tokens_problem(body: object) -> str | None:
    tokens, problem = _object(body, "tokens")
    if tokens is None:
        return problem
    for key in ("access_token", "refresh_token"):
        token = tokens.get(key)
        if not isinstance(token, str) or token.count(".") != 2:
            return f"tokens: {key} is not a JWT: {token!r}"
    if str(tokens.get("token_type", "")).lower() != "bearer":
        return f"tokens: token_type {tokens.get('token_type')!r} != 'bearer'"
    return None


def _list_field(body: object, key: str) -> tuple[list[Any] | None, str | None]:
    page, problem = _object(body, key)
    if page is None:
        return None, problem
    entries = page.get(key)
    if not isinstance(entries, list):
        return None, f"{key}: expected a list under {key!r}"
    return entries, None


def users_page_problem(body: object, *, limit: int) -> str | None:
    users, problem = _list_field(body, "users")
    if users is None:
        return problem
    if len(users) > limit:
        return f"users: {len(users)} entries for limit {limit}"
    for user in users:
        if reason := user_problem(user):
            return reason
    pubids = [user["pubid"] for user in users]
    if len(set(pubids)) != len(pubids):
        return "users: the same user twice on one page"
    return None


def items_page_problem(
    body: object, *, owner: str, expected: Collection[str] | None = None
) -> str | None:
    """The caller's items; `expected` (pubids) must then match exactly."""
    items, problem = _list_field(body, "items")
    if items is None:
        return problem
    for item in items:
        if reason := item_problem(item, owner=owner):
            return reason
    if expected is not None:
        got = {item["pubid"] for item in items}
        if got != set(expected):
            missing, extra = set(expected) - got, got - set(expected)
            return f"items: {len(missing)} missing, {len(extra)} unexpected (of {len(got)})"
    return None


def user_detail_problem(
    body: object,
    *,
    pubid: str,
    name: str | None = None,
    item_count_at_least: int | None = None,
    item_count: int | None = None,
) -> str | None:
    """GET /users/{pubid}?incl_items=true: the user and a list of its own items."""
    if reason := user_problem(body, pubid=pubid, name=name):
        return reason
    assert isinstance(body, Mapping)
    items = body.get("items")
    if not isinstance(items, list):
        return "user detail: items missing (incl_items=true)"
    for item in items:
        if reason := item_problem(item, owner=pubid):
            return reason
    if item_count is not None and len(items) != item_count:
        return f"user detail: {len(items)} items, expected {item_count}"
    if item_count_at_least is not None and len(items) < item_count_at_least:
        return f"user detail: {len(items)} items, expected at least {item_count_at_least}"
    return None


def detail_problem(body: object, *, contains: str) -> str | None:
    """An error body {"detail": "..."} that says what was expected."""
    error, problem = _object(body, "error")
    if error is None:
        return problem
    detail = error.get("detail")
    if not isinstance(detail, str) or contains.lower() not in detail.lower():
        return f"error detail {detail!r} does not mention {contains!r}"
    return None
