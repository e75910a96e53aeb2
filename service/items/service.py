"""Item statements, always scoped to the calling user. Each is built once at import (plain
Core constructs: SQLAlchemy's compiled cache serves them after the first use) and takes its
values as bound parameters. Each joins `CALLER`, so the authorization check is part of the
statement: no row at all means the caller is unknown (401)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, delete, insert, select, true, update

from service.auth.caller import CALLER
from service.auth.dependencies import Caller, known_caller
from service.core.db import AnyRow
from service.items.models import items_table as items

_ITEM = (items.c.pubid, items.c.name, items.c.added)
# Not named like a column: an UPDATE would take a parameter "pubid" as a new value for it.
_PUBID = bindparam("item_pubid", type_=items.c.pubid.type)
_ADDED = bindparam("added", type_=items.c.added.type)


class ItemNotFoundError(Exception):
    pass


# SELECT caller.pubid, items... FROM caller LEFT JOIN items ON <own item with this pubid>
_GET = select(*_ITEM, CALLER.c.pubid.label("user_pubid")).select_from(
    CALLER.outerjoin(items, and_(items.c.user_id == CALLER.c.id, items.c.pubid == _PUBID))
)

# A page of the caller's items, LEFT JOIN LATERAL: an empty page still returns the caller's
# row (with NULL item columns), so "no rows" means only "unknown caller".
_PAGE = (
    select(items.c.id, *_ITEM)
    .where(items.c.user_id == CALLER.c.id)
    .order_by(items.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
    .lateral("page")
)
_LIST = (
    select(_PAGE.c.pubid, _PAGE.c.name, _PAGE.c.added, CALLER.c.pubid.label("user_pubid"))
    .select_from(CALLER.outerjoin(_PAGE, true()))
    .order_by(_PAGE.c.id)
)

# INSERT INTO items (name, user_id) SELECT :name, caller.id FROM caller RETURNING ...
_CREATE = (
    insert(items)
    .from_select(["name", "user_id"], select(bindparam("name", type_=String()), CALLER.c.id))
    .returning(*_ITEM)
)

# Data-modifying CTEs, read beside the caller's row: NULL item columns mean 404.
_UPDATED = (
    update(items)
    .where(items.c.user_id == CALLER.c.id, items.c.pubid == _PUBID)
    .values(added=_ADDED)
    .returning(*_ITEM)
    .cte("updated")
)
_UPDATE = select(
    _UPDATED.c.pubid, _UPDATED.c.name, _UPDATED.c.added, CALLER.c.pubid.label("user_pubid")
).select_from(CALLER.outerjoin(_UPDATED, true()))

_DELETED = (
    delete(items)
    .where(items.c.user_id == CALLER.c.id, items.c.pubid == _PUBID)
    .returning(items.c.id)
    .cte("deleted")
)
_DELETE = select(_DELETED.c.id).select_from(CALLER.outerjoin(_DELETED, true()))


async def get_item(caller: Caller, *, pubid: uuid.UUID) -> AnyRow | None:
    """The item as a row with ItemOut's fields, or None when the caller has no such item."""
    result = await caller.connection.execute(_GET, caller.bind(item_pubid=pubid))
    row = known_caller(result.first())
    return None if row.pubid is None else row


async def list_items(caller: Caller, *, limit: int, offset: int) -> list[AnyRow]:
    result = await caller.connection.execute(_LIST, caller.bind(limit=limit, offset=offset))
    rows = result.all()
    known_caller(rows[0] if rows else None)
    return [row for row in rows if row.pubid is not None]


async def create_item(caller: Caller, *, name: str) -> dict[str, Any]:
    result = await caller.connection.execute(_CREATE, caller.bind(name=name))
    row = known_caller(result.first())
    return {**row._mapping, "user_pubid": caller.claims.user_pubid}


async def update_added(caller: Caller, *, pubid: uuid.UUID, added: datetime) -> AnyRow | None:
    result = await caller.connection.execute(_UPDATE, caller.bind(item_pubid=pubid, added=added))
    row = known_caller(result.first())
    return None if row.pubid is None else row


async def update_added_in_order(
    caller: Caller, *, updates: Sequence[tuple[uuid.UUID, datetime]]
) -> list[AnyRow]:
    """Apply the updates one by one, in the order given, in the caller's transaction.
    Concurrent batches that name the same rows in opposite orders can deadlock; the
    retrying unit of work runs the loser again."""
    changed = []
    for pubid, added in updates:
        item = await update_added(caller, pubid=pubid, added=added)
        if item is None:
            raise ItemNotFoundError(pubid)
        changed.append(item)
    return changed


async def delete_item(caller: Caller, *, pubid: uuid.UUID) -> bool:
    result = await caller.connection.execute(_DELETE, caller.bind(item_pubid=pubid))
    return known_caller(result.first()).id is not None
