"""Input types shared by several features.

Validation is strict where pydantic's lax mode would accept what the OpenAPI schema does
not: every type here takes exactly the spelling its schema states, nothing coerced.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from annotated_types import Ge, Le
from fastapi import Query
from pydantic import AfterValidator, BeforeValidator, StringConstraints

MAX_PAGE_SIZE = 500
MAX_OFFSET = 1_000_000

NO_NUL_PATTERN = r"^[^\x00]*$"
# Python's whitespace (str.isspace), spelled out: regex dialects disagree on what \s means.
SPACE_CLASS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACES = "".join(ch for ch in map(chr, range(0x3001)) if ch.isspace())


def strip_spaces(value: str) -> str:
    """Applied after the length and pattern checks, so that those are exactly the schema's."""
    return value.strip(_SPACES)


# Names need at least one character that is not a space; surrounding spaces are dropped.
Name = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=30, pattern=rf"^[^\x00]*[^\x00{SPACE_CLASS}][^\x00]*$"
    ),
    AfterValidator(strip_spaces),
]

_QUERY_INTEGER = re.compile(r"-?[0-9]+")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _query_integer(value: object) -> object:
    """Lax int parsing takes "+5", " 5", "5_0" and "5.0"; a query integer is plain digits."""
    if isinstance(value, str) and not _QUERY_INTEGER.fullmatch(value):
        raise ValueError("must be an integer written in decimal digits")
    return value


def _query_boolean(value: object) -> object:
    """Lax bool parsing takes "1", "yes", "on", "t", "TRUE"...: a query flag is true or false."""
    if isinstance(value, str) and value not in {"true", "false"}:
        raise ValueError("must be true or false")
    return value


def _canonical_uuid(value: object) -> object:
    """JSON Schema's "uuid" is the hyphenated 8-4-4-4-12 form; Python's parser also takes
    braces, "urn:uuid:" and bare hex digits."""
    if isinstance(value, str) and not _CANONICAL_UUID.fullmatch(value):
        raise ValueError("must be a UUID in the 8-4-4-4-12 hexadecimal form")
    return value


PubId = Annotated[uuid.UUID, BeforeValidator(_canonical_uuid)]
QueryFlag = Annotated[bool, BeforeValidator(_query_boolean)]
# The bounds go on the type itself (not on Query): next to a validator, FastAPI would put
# Query's ge/le into the schema under those names, which no client understands.
Limit = Annotated[
    int, Ge(1), Le(MAX_PAGE_SIZE), BeforeValidator(_query_integer), Query(description="Page size")
]
Offset = Annotated[
    int, Ge(0), Le(MAX_OFFSET), BeforeValidator(_query_integer), Query(description="Rows to skip")
]


def reject_unstorable_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value
