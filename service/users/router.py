"""User routes. Each returns database rows as they are: FastAPI validates them into the
response model once, and serializes it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import sessions, throttle
from service.auth.caller import Claims
from service.auth.dependencies import (
    Caller,
    CallerDep,
    ClaimsDep,
    HasherDep,
    ThrottleLimitsDep,
    client_address,
    too_many_attempts,
)
from service.core import metrics
from service.core.connection import DatabaseDep, DbDep
from service.core.db import AnyRow, Database, commit_with_retry
from service.core.openapi import responses
from service.core.schemas import Limit, Offset, PubId, QueryFlag
from service.users import service
from service.users.schemas import (
    PasswordChange,
    UserCreate,
    UserOut,
    UsersPage,
    UserUpdate,
    UserWithItems,
)

router = APIRouter(prefix="/users", tags=["users"])


async def _require_self(caller: Caller, pubid: PubId) -> None:
    if caller.claims.user_pubid != pubid:
        await caller.require_row()  # an unknown caller hears 401 first, as everywhere
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You can only change your own account")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=responses(409, 413, 422, 503),
)
async def create_user(body: UserCreate, database: DatabaseDep, hasher: HasherDep) -> AnyRow:
    # Hash first, then take a connection: bcrypt's ~0.25 s must not hold a pooled one.
    async with hasher.admitted():  # 503 at once when this worker's hashing is saturated
        password_hash = await hasher.hash(body.password)
    async with database.connect(read_only=False) as connection:
        try:
            return await commit_with_retry(
                connection,
                lambda: service.create_user(
                    connection,
                    name=body.name,
                    password_hash=password_hash,
                    fullname=body.fullname,
                    initial_items=body.initial_items,
                ),
                on_retry=metrics.record_db_retry,
                attempts=database.retry_attempts,
            )
        except service.NameTakenError:
            raise HTTPException(status.HTTP_409_CONFLICT, "User name already taken") from None


@router.get("", response_model=UsersPage, responses=responses(422, 503))
async def list_users(db: DbDep, limit: Limit = 50, offset: Offset = 0) -> dict[str, list[AnyRow]]:
    return {"users": await service.list_users(db.connection, limit=limit, offset=offset)}


@router.get(
    "/{pubid}",
    response_model=UserWithItems,
    response_model_exclude_none=False,
    responses=responses(404, 422, 503),
)
async def get_user(
    pubid: PubId, db: DbDep, incl_items: QueryFlag = False
) -> AnyRow | dict[str, Any]:
    user = (
        await service.get_user_with_items(db.connection, pubid=pubid)
        if incl_items
        else await service.get_user(db.connection, pubid=pubid)
    )
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    return user


@router.put("/{pubid}", response_model=UserOut, responses=responses(401, 403, 404, 413, 422, 503))
async def update_user(pubid: PubId, body: UserUpdate, caller: CallerDep) -> AnyRow:
    await _require_self(caller, pubid)
    return await caller.commit_with_retry(
        lambda: service.update_own_fullname(caller, fullname=body.fullname)
    )


@router.delete(
    "/{pubid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 404, 422, 503),
)
async def delete_user(pubid: PubId, caller: CallerDep) -> None:
    await _require_self(caller, pubid)
    await caller.commit_with_retry(lambda: service.delete_self(caller))


@router.put(
    "/{pubid}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 413, 422, 429, 503),
)
async def change_password(
    *,
    pubid: PubId,
    body: PasswordChange,
    request: Request,
    claims: ClaimsDep,
    database: DatabaseDep,
    hasher: HasherDep,
    limits: ThrottleLimitsDep,
) -> None:
    """A wrong current password counts as a failed login (a stolen access token must not
    become an unthrottled password oracle). Success ends every session of the user. No
    connection is held while bcrypt runs."""
    if claims.user_pubid != pubid:
        async with database.connect(read_only=True) as connection:
            await _require_self(_caller(connection, database, claims), pubid)
    async with hasher.admitted():  # 503 at once when this worker's hashing is saturated
        # Autocommit, as in login: the count's row locks end with its statement.
        async with database.connect(read_only=True) as connection:
            own = await service.get_own_login(_caller(connection, database, claims))
            reserved = await throttle.reserve(
                connection, username=own.name, address=client_address(request), limits=limits
            )
        if isinstance(reserved, throttle.Throttled):
            raise too_many_attempts(reserved)
        if not await hasher.verify(body.current_password, own.password_hash):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Current password is incorrect")
        new_hash = await hasher.hash(body.new_password)

    async with database.connect(read_only=False) as connection:
        caller = _caller(connection, database, claims)

        async def replace_password() -> int:
            await throttle.give_back(connection, reservation=reserved)
            await service.set_own_password_hash(caller, password_hash=new_hash)
            return await sessions.end_user_sessions(
                connection, user_id=own.id, reason="password_change"
            )

        ended = await caller.commit_with_retry(replace_password)
    metrics.SESSIONS_ENDED.labels(reason="password_change").inc(ended)


def _caller(connection: AsyncConnection, database: Database, claims: Claims) -> Caller:
    return Caller(connection, database.retry_attempts, claims)
