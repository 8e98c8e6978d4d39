"""Tables of the user service."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventbus import outbox_table
from shared.db import IdMixin, TimestampMixin, service_registry, utcnow


class Base(DeclarativeBase):
    registry = service_registry()


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


class User(IdMixin, TimestampMixin, Base):
    # "user" is reserved in PostgreSQL.
    __tablename__ = "user_account"
    # The administrators' list: oldest first, and the keyset of its cursors.
    __table_args__ = (Index("ix_user_account_created_at_id", "created_at", "id"),)

    email: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.CUSTOMER)
    is_active: Mapped[bool] = mapped_column(default=True)


class RefreshToken(IdMixin, Base):
    """One refresh token; rotation spends it and issues the next one of the same family.

    Only a SHA-256 of the token is stored: a leaked table holds no usable tokens."""

    __tablename__ = "refresh_token"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


#: Events waiting for the relay (eventbus): written with the change they report.
outbox_event = outbox_table(Base.metadata)
