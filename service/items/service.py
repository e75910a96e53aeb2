"""Item persistence, always scoped to the owning user."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.items.models import Item
from service.items.schemas import ItemOut
from service.users.models import User

if TYPE_CHECKING:
    from service.auth.dependencies import Principal

_ITEM_COLUMNS = (Item.pubid, Item.name, Item.added, User.pubid.label("user_pubid"))


def _to_out(row: Row[uuid.UUID, str, datetime, uuid.UUID]) -> ItemOut:
    return ItemOut(pubid=row[0], name=row[1], added=row[2], user_pubid=row[3])


async def create_item(session: AsyncSession, *, owner: Principal, name: str) -> ItemOut:
    row = (
        await session.execute(
            insert(Item)
            .values(name=name, user_id=owner.id)
            .returning(Item.pubid, Item.name, Item.added)
        )
    ).one()
    return ItemOut(pubid=row.pubid, name=row.name, added=row.added, user_pubid=owner.pubid)


async def list_items(
    session: AsyncSession, *, owner_id: int, limit: int, offset: int
) -> list[ItemOut]:
    rows = await session.execute(
        select(*_ITEM_COLUMNS)
        .join(User, Item.user_id == User.id)
        .where(Item.user_id == owner_id)
        .order_by(Item.id)
        .limit(limit)
        .offset(offset)
    )
    return [_to_out(row) for row in rows]


async def get_item(session: AsyncSession, *, owner_id: int, pubid: uuid.UUID) -> ItemOut | None:
    row = (
        await session.execute(
            select(*_ITEM_COLUMNS)
            .join(User, Item.user_id == User.id)
            .where(Item.pubid == pubid, Item.user_id == owner_id)
        )
    ).one_or_none()
    return None if row is None else _to_out(row)


async def update_added(
    session: AsyncSession, *, owner: Principal, pubid: uuid.UUID, added: datetime
) -> ItemOut | None:
    row = (
        await session.execute(
            update(Item)
            .where(Item.pubid == pubid, Item.user_id == owner.id)
            .values(added=added)
            .returning(Item.pubid, Item.name, Item.added)
        )
    ).one_or_none()
    if row is None:
        return None
    return ItemOut(pubid=row.pubid, name=row.name, added=row.added, user_pubid=owner.pubid)


class ItemNotFoundError(Exception):
    pass


async def update_added_in_order(
    session: AsyncSession, *, owner: Principal, updates: list[tuple[uuid.UUID, datetime]]
) -> list[ItemOut]:
    """Apply the updates one by one, in the order given, in the caller's transaction.
    Concurrent batches that name the same rows in opposite orders can deadlock; the
    caller's retrying unit of work runs the loser again."""
    changed = []
    for pubid, added in updates:
        item = await update_added(session, owner=owner, pubid=pubid, added=added)
        if item is None:
            raise ItemNotFoundError(pubid)
        changed.append(item)
    return changed


async def delete_item(session: AsyncSession, *, owner_id: int, pubid: uuid.UUID) -> bool:
    deleted = await session.scalar(
        delete(Item).where(Item.pubid == pubid, Item.user_id == owner_id).returning(Item.id)
    )
    return deleted is not None
