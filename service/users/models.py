from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import BigInteger, DateTime, Identity, String, Table, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.core.models import Base

if TYPE_CHECKING:
    from service.items.models import Item

NAME_MAX_LENGTH = 30
FULLNAME_MAX_LENGTH = 100


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    pubid: Mapped[uuid.UUID] = mapped_column(
        Uuid, unique=True, server_default=text("gen_random_uuid()")
    )
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), unique=True)
    fullname: Mapped[str | None] = mapped_column(String(FULLNAME_MAX_LENGTH))
    password_hash: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    items: Mapped[list[Item]] = relationship(
        back_populates="user", lazy="raise", passive_deletes=True, order_by="Item.id"
    )


# The table itself, for Core statements (no ORM layer on the request path).
users_table = cast(Table, User.__table__)
