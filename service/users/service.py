"""User persistence. Plain async functions: session first, keyword-only arguments."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from service.items.models import Item
from service.users.models import User


class NameTakenError(Exception):
    pass


async def create_user(
    session: AsyncSession,
    *,
    name: str,
    password_hash: str,
    fullname: str | None,
    initial_items: list[str],
) -> User:
    """Insert the user and its initial items in the caller's transaction.

    ON CONFLICT DO NOTHING keeps a lost race on the name a plain 409 instead of an
    aborted transaction and a unique-violation error."""
    inserted = await session.execute(
        pg_insert(User)
        .values(name=name, password_hash=password_hash, fullname=fullname)
        .on_conflict_do_nothing(index_elements=[User.name])
        .returning(User.id)
    )
    user_id = inserted.scalar_one_or_none()
    if user_id is None:
        raise NameTakenError(name)
    if initial_items:
        await session.execute(
            insert(Item), [{"name": item, "user_id": user_id} for item in initial_items]
        )
    user = await session.get_one(User, user_id)
    return user


async def list_users(session: AsyncSession, *, limit: int, offset: int) -> list[User]:
    result = await session.scalars(select(User).order_by(User.id).limit(limit).offset(offset))
    return list(result)


async def get_user(
    session: AsyncSession, *, pubid: uuid.UUID, with_items: bool = False
) -> User | None:
    query = select(User).where(User.pubid == pubid)
    if with_items:
        query = query.options(selectinload(User.items))
    result: User | None = await session.scalar(query)
    return result


async def get_user_by_name(session: AsyncSession, *, name: str) -> User | None:
    result: User | None = await session.scalar(select(User).where(User.name == name))
    return result


async def update_fullname(
    session: AsyncSession, *, pubid: uuid.UUID, fullname: str | None
) -> User | None:
    result: User | None = await session.scalar(
        update(User).where(User.pubid == pubid).values(fullname=fullname).returning(User)
    )
    return result


async def delete_user(session: AsyncSession, *, pubid: uuid.UUID) -> bool:
    """Items go with the user through the foreign key's ON DELETE CASCADE."""
    deleted = await session.scalar(delete(User).where(User.pubid == pubid).returning(User.id))
    return deleted is not None


async def password_hash_of(session: AsyncSession, *, user_id: int) -> str | None:
    result: str | None = await session.scalar(select(User.password_hash).where(User.id == user_id))
    return result


async def set_password_hash(session: AsyncSession, *, user_id: int, password_hash: str) -> bool:
    updated = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash)
        .returning(User.id)
    )
    return updated is not None
