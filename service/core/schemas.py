"""Input types shared by several features."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints

MAX_PAGE_SIZE = 500
MAX_OFFSET = 1_000_000

# Names are stripped of surrounding space and must keep at least one visible character.
NO_NUL_PATTERN = r"^[^\x00]*$"
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=30, pattern=r"^[^\x00]*\S[^\x00]*$"
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip")]


def reject_unstorable_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value
