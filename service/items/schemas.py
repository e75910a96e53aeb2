from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from service.core.schemas import Name, reject_unstorable_text

ItemName = Annotated[Name, AfterValidator(reject_unstorable_text)]


def _representable_in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


Timestamp = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ItemName
    user_pubid: uuid.UUID


class ItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    added: Timestamp


MAX_BULK_UPDATES = 100


class ItemAddedUpdate(ItemUpdate):
    pubid: uuid.UUID


class ItemsBulkUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    updates: list[ItemAddedUpdate] = Field(
        min_length=1,
        max_length=MAX_BULK_UPDATES,
        description="Applied in this order; an item named twice ends with its last value.",
    )


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    pubid: uuid.UUID
    name: str
    added: datetime
    user_pubid: uuid.UUID


class ItemsPage(BaseModel):
    items: list[ItemOut]
