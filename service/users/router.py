from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, status

from service.auth import sessions, throttle
from service.auth.dependencies import (
    CurrentUser,
    DatabaseDep,
    HasherDep,
    Principal,
    ThrottleLimitsDep,
    client_address,
    too_many_attempts,
)
from service.core import metrics
from service.core.db import SessionDep, commit_with_retry
from service.core.openapi import responses
from service.core.schemas import Limit, Offset, PubId, QueryFlag
from service.items.schemas import ItemOut
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


def _require_self(current: Principal, pubid: uuid.UUID) -> None:
    if current.pubid != pubid:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You can only change your own account")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=responses(409, 413, 422, 503),
)
async def create_user(body: UserCreate, session: SessionDep, hasher: HasherDep) -> UserOut:
    async with hasher.admitted():  # 503 at once when this worker's hashing is saturated
        password_hash = await hasher.hash(body.password)
    try:
        user = await commit_with_retry(
            session,
            lambda: service.create_user(
                session,
                name=body.name,
                password_hash=password_hash,
                fullname=body.fullname,
                initial_items=body.initial_items,
            ),
            on_retry=metrics.record_db_retry,
        )
    except service.NameTakenError:
        raise HTTPException(status.HTTP_409_CONFLICT, "User name already taken") from None
    return UserOut.model_validate(user)


@router.get("", response_model=UsersPage, responses=responses(422, 503))
async def list_users(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> UsersPage:
    found = await service.list_users(session, limit=limit, offset=offset)
    return UsersPage(users=[UserOut.model_validate(user) for user in found])


@router.get(
    "/{pubid}",
    response_model=UserWithItems,
    response_model_exclude_none=False,
    responses=responses(404, 422, 503),
)
async def get_user(
    pubid: PubId, session: SessionDep, incl_items: QueryFlag = False
) -> UserWithItems:
    user = await service.get_user(session, pubid=pubid, with_items=incl_items)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    items = (
        [
            ItemOut(pubid=item.pubid, name=item.name, added=item.added, user_pubid=user.pubid)
            for item in user.items
        ]
        if incl_items
        else None
    )
    return UserWithItems(pubid=user.pubid, name=user.name, fullname=user.fullname, items=items)


@router.put("/{pubid}", response_model=UserOut, responses=responses(401, 403, 404, 413, 422, 503))
async def update_user(
    pubid: PubId, body: UserUpdate, session: SessionDep, current: CurrentUser
) -> UserOut:
    _require_self(current, pubid)
    updated = await commit_with_retry(
        session,
        lambda: service.update_fullname(session, pubid=pubid, fullname=body.fullname),
        on_retry=metrics.record_db_retry,
    )
    if updated is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    return UserOut.model_validate(updated)


@router.delete(
    "/{pubid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 404, 422, 503),
)
async def delete_user(pubid: PubId, session: SessionDep, current: CurrentUser) -> None:
    _require_self(current, pubid)
    deleted = await commit_with_retry(
        session,
        lambda: service.delete_user(session, pubid=pubid),
        on_retry=metrics.record_db_retry,
    )
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")


@router.put(
    "/{pubid}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 413, 422, 429, 503),
)
async def change_password(
    *,
    pubid: uuid.UUID,
    body: PasswordChange,
    request: Request,
    session: SessionDep,
    current: CurrentUser,
    database: DatabaseDep,
    hasher: HasherDep,
    limits: ThrottleLimitsDep,
) -> None:
    """A wrong current password counts as a failed login (a stolen access token must not
    become an unthrottled password oracle). Success ends every session of the user."""
    _require_self(current, pubid)
    await session.commit()  # end the caller lookup's transaction: no connection held below
    async with hasher.admitted():
        async with database.read_sessionmaker() as quick:  # autocommit, as in login
            reserved = await throttle.reserve(
                quick, username=current.name, address=client_address(request), limits=limits
            )
            if isinstance(reserved, throttle.Throttled):
                raise too_many_attempts(reserved)
            stored_hash = await service.password_hash_of(quick, user_id=current.id)
        if not await hasher.verify(body.current_password, stored_hash):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Current password is incorrect")
        new_hash = await hasher.hash(body.new_password)

    async def replace_password() -> int:
        await throttle.give_back(session, reservation=reserved)
        await service.set_password_hash(session, user_id=current.id, password_hash=new_hash)
        return await sessions.end_user_sessions(
            session, user_id=current.id, reason="password_change"
        )

    ended = await commit_with_retry(session, replace_password, on_retry=metrics.record_db_retry)
    metrics.SESSIONS_ENDED.labels(reason="password_change").inc(ended)
