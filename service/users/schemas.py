from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from service.core.schemas import NO_NUL_PATTERN, Name, reject_unstorable_text
from service.core.security import BCRYPT_MAX_PASSWORD_BYTES
from service.items.schemas import ItemOut
from service.users.models import FULLNAME_MAX_LENGTH

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 50
MAX_INITIAL_ITEMS = 20


def _check_password(value: str) -> str:
    reject_unstorable_text(value)
    if not any(ch.isalpha() for ch in value) or not any(ch.isdigit() for ch in value):
        raise ValueError("must contain at least one letter and one digit")
    if len(value.encode()) > BCRYPT_MAX_PASSWORD_BYTES:
        raise ValueError(f"must be at most {BCRYPT_MAX_PASSWORD_BYTES} bytes in UTF-8")
    return value


# The letter-and-digit rule, for the OpenAPI schema only: pydantic's regex engine has no
# lookaheads, so _check_password enforces it (and the 72-byte bcrypt limit).
_PASSWORD_SCHEMA_PATTERN = r"^(?=.*[^\W\d_])(?=.*\d)[^\x00]*$"

Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    AfterValidator(_check_password),
    Field(
        json_schema_extra={"pattern": _PASSWORD_SCHEMA_PATTERN},
        description="8-50 characters, at least one letter and one digit, at most 72 bytes",
    ),
]
UserName = Annotated[Name, AfterValidator(reject_unstorable_text)]
FullName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=FULLNAME_MAX_LENGTH, pattern=NO_NUL_PATTERN
    ),
    AfterValidator(reject_unstorable_text),
]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: UserName
    password: Password
    fullname: FullName | None = None
    initial_items: list[UserName] = Field(
        default_factory=list,
        max_length=MAX_INITIAL_ITEMS,
        description="Items created in the same transaction as the user.",
    )


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fullname: FullName | None


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Checked against the stored hash only: no format rule may tell a guesser anything.
    current_password: Annotated[
        str,
        StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH),
        AfterValidator(reject_unstorable_text),
    ]
    new_password: Password


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    pubid: uuid.UUID
    name: str
    fullname: str | None


class UserWithItems(UserOut):
    items: list[ItemOut] | None = None


class UsersPage(BaseModel):
    users: list[UserOut]
