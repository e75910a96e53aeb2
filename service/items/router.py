from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from service.auth.dependencies import CurrentUser
from service.core import metrics
from service.core.db import SessionDep, commit_with_retry
from service.core.openapi import responses
from service.core.schemas import Limit, Offset, PubId
from service.items import service
from service.items.schemas import ItemCreate, ItemOut, ItemsBulkUpdate, ItemsPage, ItemUpdate

router = APIRouter(prefix="/items", tags=["items"])

ITEM_NOT_FOUND = "Item not found"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemOut,
    responses=responses(401, 403, 413, 422, 503),
)
async def create_item(body: ItemCreate, session: SessionDep, current: CurrentUser) -> ItemOut:
    if body.user_pubid != current.pubid:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You can only add items to yourself")
    return await commit_with_retry(
        session,
        lambda: service.create_item(session, owner=current, name=body.name),
        on_retry=metrics.record_db_retry,
    )


@router.get("", response_model=ItemsPage, responses=responses(401, 422, 503))
async def list_items(
    session: SessionDep,
    current: CurrentUser,
    user_pubid: PubId | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ItemsPage:
    """Your own items. Filtering on another user's id finds nothing, as if they had none."""
    if user_pubid is not None and user_pubid != current.pubid:
        return ItemsPage(items=[])
    found = await service.list_items(session, owner_id=current.id, limit=limit, offset=offset)
    return ItemsPage(items=found)


@router.get("/{pubid}", response_model=ItemOut, responses=responses(401, 404, 422, 503))
async def get_item(pubid: PubId, session: SessionDep, current: CurrentUser) -> ItemOut:
    item = await service.get_item(session, owner_id=current.id, pubid=pubid)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ITEM_NOT_FOUND)
    return item


@router.patch("", response_model=ItemsPage, responses=responses(401, 404, 413, 422, 503))
async def update_items(
    body: ItemsBulkUpdate, session: SessionDep, current: CurrentUser
) -> ItemsPage:
    """Set `added` on several of your items at once, all or nothing."""
    updates = [(update.pubid, update.added) for update in body.updates]
    try:
        changed = await commit_with_retry(
            session,
            lambda: service.update_added_in_order(session, owner=current, updates=updates),
            on_retry=metrics.record_db_retry,
        )
    except service.ItemNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ITEM_NOT_FOUND) from None
    return ItemsPage(items=changed)


@router.put("/{pubid}", response_model=ItemOut, responses=responses(401, 404, 413, 422, 503))
async def update_item(
    pubid: PubId, body: ItemUpdate, session: SessionDep, current: CurrentUser
) -> ItemOut:
    updated = await commit_with_retry(
        session,
        lambda: service.update_added(session, owner=current, pubid=pubid, added=body.added),
        on_retry=metrics.record_db_retry,
    )
    if updated is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ITEM_NOT_FOUND)
    return updated


@router.delete(
    "/{pubid}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401, 404, 422, 503)
)
async def delete_item(pubid: PubId, session: SessionDep, current: CurrentUser) -> None:
    deleted = await commit_with_retry(
        session,
        lambda: service.delete_item(session, owner_id=current.id, pubid=pubid),
        on_retry=metrics.record_db_retry,
    )
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ITEM_NOT_FOUND)
