"""ORM tables of the notification log and the recipients it knows."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventbus import inbox_table
from shared.db import (
    NAMING_CONVENTION,
    TYPE_ANNOTATION_MAP,
    IdMixin,
    one_of,
    string_enum,
    utcnow,
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = TYPE_ANNOTATION_MAP


class NotificationKind(StrEnum):
    WELCOME = "welcome"
    ORDER_CONFIRMED = "order_confirmed"
    ORDER_CANCELLED = "order_cancelled"
    ORDER_SHIPPED = "order_shipped"


class NotificationStatus(StrEnum):
    #: Handed to the SMTP server.
    SENT = "sent"
    #: No SMTP server is configured: stored and logged only.
    RECORDED = "recorded"
    #: Every try to send it failed.
    FAILED = "failed"


class Recipient(Base):
    """Whom to mail about a user's orders, learnt from `user.registered` (order events
    carry only the user id, and this service reads no other service's database)."""

    __tablename__ = "recipient"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(IdMixin, Base):
    """One e-mail this service sent (or recorded, or failed to send)."""

    __tablename__ = "notification"
    __table_args__ = (
        CheckConstraint(one_of("kind", NotificationKind), name="kind_known"),
        CheckConstraint(one_of("status", NotificationStatus), name="status_known"),
        # A user's notifications, newest first.
        Index("ix_notification_user_id_created_at", "user_id", "created_at"),
        Index("ix_notification_created_at", "created_at"),
    )

    user_id: Mapped[uuid.UUID]
    kind: Mapped[NotificationKind] = mapped_column(string_enum(NotificationKind, 32))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text())
    status: Mapped[NotificationStatus] = mapped_column(string_enum(NotificationStatus, 16))
    order_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    recipient: Mapped[str] = mapped_column(String(320))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: Ids of the events already processed (eventbus): each takes effect once.
inbox_event = inbox_table(Base.metadata)
