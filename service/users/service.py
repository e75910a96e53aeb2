"""User statements, built once at import (Core constructs served from SQLAlchemy's compiled
cache) and given their values as bound parameters. Plain async functions, connection first.
The ones acting as the caller join `CALLER` (service.auth.caller): no row means 401."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth.caller import caller_clause
from service.auth.dependencies import Caller, known_caller
from service.core.db import AnyRow
from service.items.models import items_table as items
from service.users.models import users_table as users

_USER = (users.c.pubid, users.c.name, users.c.fullname)
_PUBID = bindparam("pubid", type_=users.c.pubid.type)


class NameTakenError(Exception):
    pass


# ON CONFLICT DO NOTHING keeps a lost race on the name a plain 409 instead of an aborted
# transaction and a unique-violation error.
_CREATE = (
    pg_insert(users)
    .values(
        name=bindparam("name", type_=users.c.name.type),
        password_hash=bindparam("password_hash", type_=users.c.password_hash.type),
        fullname=bindparam("fullname", type_=users.c.fullname.type),
    )
    .on_conflict_do_nothing(index_elements=[users.c.name])
    .returning(users.c.id, *_USER)
)
_ADD_ITEMS = insert(items)
_LIST = select(*_USER).order_by(users.c.id).limit(bindparam("limit")).offset(bindparam("offset"))
_GET = select(*_USER).where(users.c.pubid == _PUBID)
# The user with its items, oldest first: one row per item, or one with NULL item columns.
_GET_WITH_ITEMS = (
    select(
        *_USER,
        items.c.pubid.label("item_pubid"),
        items.c.name.label("item_name"),
        items.c.added.label("item_added"),
    )
    .select_from(users.outerjoin(items, items.c.user_id == users.c.id))
    .where(users.c.pubid == _PUBID)
    .order_by(items.c.id)
)
_BY_NAME = select(users.c.id, users.c.pubid, users.c.password_hash).where(
    users.c.name == bindparam("name", type_=users.c.name.type)
)
_UPDATE_OWN_FULLNAME = (
    update(users)
    .where(caller_clause())
    .values(fullname=bindparam("fullname", type_=users.c.fullname.type))
    .returning(*_USER)
)
_DELETE_SELF = delete(users).where(caller_clause()).returning(users.c.id)
_OWN_LOGIN = select(users.c.id, users.c.name, users.c.password_hash).where(caller_clause())
_SET_OWN_PASSWORD_HASH = (
    update(users)
    .where(caller_clause())
    .values(password_hash=bindparam("password_hash", type_=users.c.password_hash.type))
    .returning(users.c.id)
)


async def create_user(
    connection: AsyncConnection,
    *,
    name: str,
    password_hash: str,
    fullname: str | None,
    initial_items: list[str],
) -> AnyRow:
    """Insert the user and its initial items in the caller's transaction."""
    params = {"name": name, "password_hash": password_hash, "fullname": fullname}
    user = (await connection.execute(_CREATE, params)).first()
    if user is None:
        raise NameTakenError(name)
    if initial_items:
        await connection.execute(
            _ADD_ITEMS, [{"name": item, "user_id": user.id} for item in initial_items]
        )
    return user


async def list_users(connection: AsyncConnection, *, limit: int, offset: int) -> list[AnyRow]:
    result = await connection.execute(_LIST, {"limit": limit, "offset": offset})
    return list(result.all())


async def get_user(connection: AsyncConnection, *, pubid: uuid.UUID) -> AnyRow | None:
    return (await connection.execute(_GET, {"pubid": pubid})).first()


async def get_user_with_items(
    connection: AsyncConnection, *, pubid: uuid.UUID
) -> dict[str, Any] | None:
    rows = (await connection.execute(_GET_WITH_ITEMS, {"pubid": pubid})).all()
    if not rows:
        return None
    user = rows[0]
    found = [
        {"pubid": r.item_pubid, "name": r.item_name, "added": r.item_added, "user_pubid": pubid}
        for r in rows
        if r.item_pubid is not None
    ]
    return {"pubid": user.pubid, "name": user.name, "fullname": user.fullname, "items": found}


async def get_login(connection: AsyncConnection, *, name: str) -> AnyRow | None:
    """The user's id, public id and password hash, for checking a login."""
    return (await connection.execute(_BY_NAME, {"name": name})).first()


async def update_own_fullname(caller: Caller, *, fullname: str | None) -> AnyRow:
    result = await caller.connection.execute(_UPDATE_OWN_FULLNAME, caller.bind(fullname=fullname))
    return known_caller(result.first())


async def delete_self(caller: Caller) -> None:
    """Items go with the user through the foreign key's ON DELETE CASCADE."""
    known_caller((await caller.connection.execute(_DELETE_SELF, caller.bind())).first())


async def get_own_login(caller: Caller) -> AnyRow:
    """The caller's id, name and password hash, for checking their current password."""
    return known_caller((await caller.connection.execute(_OWN_LOGIN, caller.bind())).first())


async def set_own_password_hash(caller: Caller, *, password_hash: str) -> None:
    """401 if the caller's session ended since their current password was checked."""
    params = caller.bind(password_hash=password_hash)
    known_caller((await caller.connection.execute(_SET_OWN_PASSWORD_HASH, params)).first())
