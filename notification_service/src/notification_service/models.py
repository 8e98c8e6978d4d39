"""ORM tables of the notification log and the recipients it knows."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventbus import inbox_table
from shared.db import (
    IdMixin,
    TimestampMixin,
    one_of,
    service_registry,
    string_enum,
    utcnow,
)


class Base(DeclarativeBase):
    registry = service_registry()


class NotificationKind(StrEnum):
    WELCOME = "welcome"
    ORDER_CONFIRMED = "order_confirmed"
    ORDER_CANCELLED = "order_cancelled"
    ORDER_SHIPPED = "order_shipped"
    ORDER_REFUNDED = "order_refunded"


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


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    """A URL an administrator registered to receive events of some types."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (Index("ix_webhook_endpoint_created_at", "created_at"),)

    url: Mapped[str] = mapped_column(String(2048))
    #: Event types, e.g. `["order.shipped", "order.delivered"]`.
    events: Mapped[list[str]] = mapped_column(JSON())
    description: Mapped[str] = mapped_column(String(500), default="")
    is_active: Mapped[bool] = mapped_column(default=True)
    #: The signing secret (`whsec_...`), Fernet-encrypted with `WEBHOOK_SECRET_KEYS`: a
    #: dump of the database alone does not reveal it.
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary())


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(IdMixin, TimestampMixin, Base):
    """One event owed to one endpoint, written in the transaction that processes the
    event (with its inbox row), then sent, and retried, by the worker."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint(one_of("status", DeliveryStatus), name="status_known"),
        # One delivery per endpoint and event, whatever replays the event.
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_delivery_endpoint_event"),
        # The worker's question: which pending deliveries are due?
        Index("ix_webhook_delivery_status_next_attempt_at", "status", "next_attempt_at"),
        # An endpoint's deliveries, newest first.
        Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(100))
    #: The event's envelope exactly as it is sent (and signed).
    payload: Mapped[str] = mapped_column(Text())
    status: Mapped[DeliveryStatus] = mapped_column(string_enum(DeliveryStatus, 16))
    attempts: Mapped[int] = mapped_column(default=0)
    response_status: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    #: When the worker may send it next; null once it succeeded or failed.
    next_attempt_at: Mapped[datetime | None]
    #: Retries stop after this instant (the delivery is then `failed`).
    retry_until: Mapped[datetime]
    #: The lease of the worker sending it now: no other worker takes it before
    #: `locked_until`, and only the holder of `lease_id` records the outcome.
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    lease_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class WebhookAttempt(IdMixin, Base):
    """One try of a delivery: what the endpoint answered, or why it could not."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery_id", "delivery_id"),)

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="CASCADE")
    )
    response_status: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    duration_ms: Mapped[int]
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)


#: Ids of the events already processed (eventbus): each takes effect once.
inbox_event = inbox_table(Base.metadata)
