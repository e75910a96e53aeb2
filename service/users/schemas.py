from __future__ import annotations

import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from service.core.schemas import NO_NUL_PATTERN, Name, reject_unstorable_text, strip_spaces
from service.items.schemas import ItemOut
from service.users.models import FULLNAME_MAX_LENGTH

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 50
MAX_INITIAL_ITEMS = 20


# At least one letter and one digit, spelled with explicit ASCII classes: JSON Schema's
# regex dialect (ECMA-262) reads \d and \w as ASCII, Python's as Unicode, and they also
# differ on "."; these classes mean the same in both. Any other character is allowed, except
# NUL. (Length has no byte limit: the hasher gives bcrypt a digest, see core/security.py.)
PASSWORD_PATTERN = r"^(?=[^\x00]*[A-Za-z])(?=[^\x00]*[0-9])[^\x00]*$"
_PASSWORD = re.compile(PASSWORD_PATTERN)


def _check_password(value: str) -> str:
    """The schema's pattern, checked with Python's re: pydantic's engine has no lookaheads."""
    reject_unstorable_text(value)
    if not _PASSWORD.fullmatch(value):
        raise ValueError("must contain at least one letter (A-Z, a-z) and one digit (0-9)")
    return value


Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    AfterValidator(_check_password),
    Field(
        json_schema_extra={"pattern": PASSWORD_PATTERN},
        description="8-50 characters with at least one letter A-Z or a-z and one digit 0-9",
    ),
]
UserName = Annotated[Name, AfterValidator(reject_unstorable_text)]
FullName = Annotated[
    str,
    StringConstraints(max_length=FULLNAME_MAX_LENGTH, pattern=NO_NUL_PATTERN),
    AfterValidator(reject_unstorable_text),
    AfterValidator(strip_spaces),
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

    # Checked against the stored hash only; the one format rule (no NUL, which no stored
    # password has) is stated in the schema, so a generated client never sends it.
    current_password: Annotated[
        str,
        StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH, pattern=NO_NUL_PATTERN),
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
