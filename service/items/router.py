"""Item routes. Each runs one statement that also checks the caller (see service.auth.caller)
and returns database rows as they are: FastAPI validates them into the response model once,
and serializes it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from service.auth.dependencies import CallerDep
from service.core.db import AnyRow
from service.core.openapi import responses
from service.core.schemas import Limit, Offset, PubId
from service.items import service
from service.items.schemas import ItemCreate, ItemOut, ItemsBulkUpdate, ItemsPage, ItemUpdate

router = APIRouter(prefix="/items", tags=["items"])

ITEM_NOT_FOUND = "Item not found"


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, ITEM_NOT_FOUND)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemOut,
    responses=responses(401, 403, 413, 422, 503),
)
async def create_item(body: ItemCreate, caller: CallerDep) -> dict[str, Any]:
    if body.user_pubid != caller.claims.user_pubid:
        await caller.require_row()  # an unknown caller hears 401 first, as everywhere
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You can only add items to yourself")
    return await caller.commit_with_retry(lambda: service.create_item(caller, name=body.name))


@router.get("", response_model=ItemsPage, responses=responses(401, 422, 503))
async def list_items(
    caller: CallerDep,
    user_pubid: PubId | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, list[AnyRow]]:
    """Your own items. Filtering on another user's id finds nothing, as if they had none."""
    if user_pubid is not None and user_pubid != caller.claims.user_pubid:
        await caller.require_row()
        return {"items": []}
    return {"items": await service.list_items(caller, limit=limit, offset=offset)}


@router.get("/{pubid}", response_model=ItemOut, responses=responses(401, 404, 422, 503))
async def get_item(pubid: PubId, caller: CallerDep) -> AnyRow:
    item = await service.get_item(caller, pubid=pubid)
    if item is None:
        raise _not_found()
    return item


@router.patch("", response_model=ItemsPage, responses=responses(401, 404, 413, 422, 503))
async def update_items(body: ItemsBulkUpdate, caller: CallerDep) -> dict[str, list[AnyRow]]:
    """Set `added` on several of your items at once, all or nothing."""
    updates = [(update.pubid, update.added) for update in body.updates]
    try:
        changed = await caller.commit_with_retry(
            lambda: service.update_added_in_order(caller, updates=updates)
        )
    except service.ItemNotFoundError:
        raise _not_found() from None
    return {"items": changed}


@router.put("/{pubid}", response_model=ItemOut, responses=responses(401, 404, 413, 422, 503))
async def update_item(pubid: PubId, body: ItemUpdate, caller: CallerDep) -> AnyRow:
    updated = await caller.commit_with_retry(
        lambda: service.update_added(caller, pubid=pubid, added=body.added)
    )
    if updated is None:
        raise _not_found()
    return updated


@router.delete(
    "/{pubid}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401, 404, 422, 503)
)
async def delete_item(pubid: PubId, caller: CallerDep) -> None:
    deleted = await caller.commit_with_retry(lambda: service.delete_item(caller, pubid=pubid))
    if not deleted:
        raise _not_found()
