"""ORM tables of orders and idempotency keys.

`order` is a reserved word in SQL, hence `purchase_order`."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from eventbus import outbox_table
from order_service.states import CancelReason, OrderStatus, TimelineEvent
from shared.db import (
    IdMixin,
    TimestampMixin,
    one_of,
    owned_lines,
    service_registry,
    string_enum,
)


class Base(DeclarativeBase):
    registry = service_registry()


class PurchaseOrder(IdMixin, TimestampMixin, Base):
    """An order and where its checkout got to.

    `compensation_pending` is set in the same UPDATE that cancels an order whose stock
    may be held or sold (or whose payment may be taken), and cleared once inventory gave
    the stock back and the payment was refunded; the sweep retries until then."""

    __tablename__ = "purchase_order"
    __table_args__ = (
        CheckConstraint(one_of("status", OrderStatus), name="status_known"),
        CheckConstraint(
            f"(status = 'cancelled' AND {one_of('cancel_reason', CancelReason)})"
            " OR (status <> 'cancelled' AND cancel_reason IS NULL)",
            name="cancel_reason_matches_status",
        ),
        CheckConstraint("total_amount >= 0", name="total_amount_non_negative"),
        CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= total_amount",
            name="refunded_amount_in_range",
        ),
        # A customer's orders, newest first.
        Index("ix_purchase_order_user_id_created_at", "user_id", "created_at"),
        # Every order, newest first (administrators), and the sweep's pending orders.
        Index("ix_purchase_order_created_at", "created_at"),
        # Administrators' orders in one status, newest first, and their capped count.
        Index("ix_purchase_order_status_created_at_id", "status", "created_at", "id"),
        Index(
            "ix_purchase_order_pending_created_at",
            "created_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_purchase_order_compensation_pending_updated_at",
            "updated_at",
            postgresql_where=text("compensation_pending"),
            sqlite_where=text("compensation_pending"),
        ),
    )

    user_id: Mapped[uuid.UUID]
    status: Mapped[OrderStatus] = mapped_column(string_enum(OrderStatus, 16))
    cancel_reason: Mapped[CancelReason | None] = mapped_column(
        string_enum(CancelReason, 32), default=None
    )
    total_amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    #: The payment provider's reference once the payment was taken.
    payment_id: Mapped[str | None] = mapped_column(String(64), default=None)
    compensation_pending: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Where to ship, as the customer gave it (`schemas.ShippingAddress`); None if not given.
    shipping_address: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: What refunds paid back so far.
    refunded_amount: Mapped[Decimal] = mapped_column(default=Decimal("0.00"), server_default="0")

    lines: Mapped[list[OrderLine]] = owned_lines("OrderLine.position", back_populates="order")


class OrderLine(Base):
    """One product of an order, priced from the catalog when the order was placed."""

    __tablename__ = "order_line"
    __table_args__ = (
        CheckConstraint("quantity BETWEEN 1 AND 100", name="quantity_in_range"),
        CheckConstraint("unit_price > 0", name="unit_price_positive"),
        # What settles two concurrent refunds of the last unit: only one can add it.
        CheckConstraint(
            "refunded_quantity >= 0 AND refunded_quantity <= quantity",
            name="refunded_quantity_in_range",
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_order.id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    #: Where the line was in the request, so the order reads back as it was placed.
    position: Mapped[int]
    product_name: Mapped[str] = mapped_column(String(200))
    unit_price: Mapped[Decimal]
    quantity: Mapped[int]
    line_total: Mapped[Decimal]
    #: Units paid back by refunds so far.
    refunded_quantity: Mapped[int] = mapped_column(default=0, server_default="0")

    order: Mapped[PurchaseOrder] = relationship(back_populates="lines", lazy="raise")


class OrderTimelineEntry(Base):
    """One thing that happened to an order, written in the transaction that made it
    happen. The id, from a sequence, orders entries of the same instant: an order's
    changes are serialized by its row lock, so a later change gets a larger id."""

    __tablename__ = "order_timeline_entry"
    __table_args__ = (
        CheckConstraint(one_of("event", TimelineEvent), name="event_known"),
        CheckConstraint(one_of("status", OrderStatus), name="status_known"),
        Index("ix_order_timeline_entry_order_id_id", "order_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purchase_order.id", ondelete="CASCADE"))
    event: Mapped[TimelineEvent] = mapped_column(string_enum(TimelineEvent, 16))
    #: The order's status right after the event.
    status: Mapped[OrderStatus] = mapped_column(string_enum(OrderStatus, 16))
    #: The cancel reason (`cancelled`) or the refund's id (`refunded`).
    detail: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[datetime]

    # Never loaded; it tells the unit of work to insert a new order before its entry.
    order: Mapped[PurchaseOrder] = relationship(lazy="raise")


class Refund(IdMixin, Base):
    """Money paid back for some units of an order (and, with `restock`, the units put
    back on sale by inventory_service, from the `order.refunded` event).

    `(requested_by, idempotency_key)` is unique: once the request that made it has
    finished (and given up its claim on the key, `IdempotencyKey`), a retry with the
    same key finds this row and replays it."""

    __tablename__ = "refund"
    __table_args__ = (
        UniqueConstraint("requested_by", "idempotency_key"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_refund_order_id_created_at", "order_id", "created_at"),
        # The sweep: refunds recorded but not yet paid back by the provider.
        Index(
            "ix_refund_unpaid_created_at",
            "created_at",
            postgresql_where=text("payment_refund_id IS NULL"),
            sqlite_where=text("payment_refund_id IS NULL"),
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purchase_order.id", ondelete="CASCADE"))
    amount: Mapped[Decimal]
    restock: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    #: The administrator who asked for it, and the Idempotency-Key they sent.
    requested_by: Mapped[uuid.UUID]
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the request (order and body): a key sent again with another is a 422.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    #: The payment provider's reference once the money went back; None until then.
    payment_refund_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime]

    lines: Mapped[list[RefundLine]] = owned_lines("RefundLine.position")
    # Never loaded; it tells the unit of work the order's row comes first.
    order: Mapped[PurchaseOrder] = relationship(lazy="raise")


class RefundLine(Base):
    __tablename__ = "refund_line"
    __table_args__ = (
        CheckConstraint("quantity BETWEEN 1 AND 100", name="quantity_in_range"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    refund_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("refund.id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    position: Mapped[int]
    quantity: Mapped[int]
    #: The order line's unit price times `quantity`.
    amount: Mapped[Decimal]


class Cart(Base):
    """A customer's cart. Its row is locked (updated) by every change of its lines, so
    concurrent changes of one cart are settled one after the other, 50-line limit
    included."""

    __tablename__ = "cart"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    updated_at: Mapped[datetime]


class CartLine(Base):
    """A product in a cart and how many; names and prices are the catalog's, read when
    the cart is shown."""

    __tablename__ = "cart_line"
    __table_args__ = (CheckConstraint("quantity BETWEEN 1 AND 100", name="quantity_in_range"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("cart.user_id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    quantity: Mapped[int]
    #: Lines show in the order they were first added.
    added_at: Mapped[datetime]


class IdempotencyState(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyKey(TimestampMixin, Base):
    """A client's Idempotency-Key for placing an order, and the answer it got; or held
    (`in_progress`, never completed) while an administrator's refund is being made.

    The primary key (user_id, key) settles concurrent duplicates: the first INSERT wins,
    the others find its row."""

    __tablename__ = "idempotency_key"
    __table_args__ = (
        CheckConstraint(one_of("state", IdempotencyState), name="state_known"),
        CheckConstraint(
            "(state = 'completed' AND response_status IS NOT NULL AND response_body IS NOT NULL)"
            " OR (state = 'in_progress' AND response_status IS NULL)",
            name="response_when_completed",
        ),
        # The sweep: keys left in progress by a crash, and completed keys past retention.
        Index("ix_idempotency_key_state_created_at", "state", "created_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 of the request body in canonical JSON.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[IdempotencyState] = mapped_column(string_enum(IdempotencyState, 16))
    response_status: Mapped[int | None] = mapped_column(default=None)
    response_body: Mapped[Any | None] = mapped_column(JSON, default=None)
    #: The order this request creates (chosen before it exists) or refunds; it also
    #: tells this claim apart from a later one with the same key.
    order_id: Mapped[uuid.UUID]


#: Events waiting for the relay (eventbus): written with the change they report.
outbox_event = outbox_table(Base.metadata)
