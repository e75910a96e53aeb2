from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from service.core.schemas import Name, PubId, reject_unstorable_text

ItemName = Annotated[Name, AfterValidator(reject_unstorable_text)]

# RFC 3339 (JSON Schema's "date-time"), narrowed so that every value that matches can be
# stored: years 0002-9998, so any offset (under 24 h) still gives a UTC instant that Python
# and PostgreSQL can hold, and no leap second (:60), which Python cannot represent.
TIMESTAMP_PATTERN = (
    r"^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def _rfc3339_text(value: object) -> object:
    """Lax datetime parsing turns 0, 1.5 and "1700000000" into Unix times and takes a space
    for the T, no seconds, or "+0100"; the schema says an RFC 3339 string."""
    if isinstance(value, datetime):  # built in Python, not parsed from a request
        return value
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time string with an offset, years 0002-9998, "
            "e.g. 2024-05-01T12:00:00Z"
        )
    return value


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(_in_utc),
    Field(
        json_schema_extra={"pattern": TIMESTAMP_PATTERN},
        description="RFC 3339 with an offset, years 0002-9998; stored to the microsecond",
    ),
]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ItemName
    user_pubid: PubId


class ItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    added: Timestamp


MAX_BULK_UPDATES = 100


class ItemAddedUpdate(ItemUpdate):
    pubid: PubId


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
