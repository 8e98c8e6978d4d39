"""ORM tables of stock and reservations."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from eventbus import inbox_table
from shared.db import (
    TimestampMixin,
    one_of,
    owned_lines,
    service_registry,
    string_enum,
    utcnow,
)


class Base(DeclarativeBase):
    registry = service_registry()


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"


class Stock(Base):
    """One product's units: on hand and free (`available`), held for orders that are not
    settled yet (`reserved`) and gone with confirmed orders (`sold`).

    What an administrator last set equals available + reserved + sold from then on:
    reservations only move units between the three columns."""

    __tablename__ = "stock"
    __table_args__ = (
        CheckConstraint("available >= 0", name="available_non_negative"),
        CheckConstraint("reserved >= 0", name="reserved_non_negative"),
        CheckConstraint("sold >= 0", name="sold_non_negative"),
    )

    product_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    available: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    sold: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Reservation(TimestampMixin, Base):
    """Stock held for one order: `reserved`, then `committed` (sold) or `released`
    (given back, with the `reason`)."""

    __tablename__ = "reservation"
    __table_args__ = (
        CheckConstraint(one_of("status", ReservationStatus), name="status_known"),
        # The expiry sweep: only reservations still holding stock, soonest first.
        Index(
            "ix_reservation_reserved_expires_at",
            "expires_at",
            postgresql_where=text("status = 'reserved'"),
            sqlite_where=text("status = 'reserved'"),
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[ReservationStatus] = mapped_column(
        string_enum(ReservationStatus, 16), default=ReservationStatus.RESERVED
    )
    reason: Mapped[str | None] = mapped_column(String(64), default=None)
    expires_at: Mapped[datetime]

    lines: Mapped[list[ReservationLine]] = owned_lines(
        "ReservationLine.product_id", back_populates="reservation"
    )


class ReservationLine(Base):
    __tablename__ = "reservation_line"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("restocked >= 0 AND restocked <= quantity", name="restocked_in_range"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reservation.order_id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    quantity: Mapped[int]
    #: Sold units put back on sale by refunds: a release later gives back only the rest.
    restocked: Mapped[int] = mapped_column(default=0, server_default="0")

    reservation: Mapped[Reservation] = relationship(back_populates="lines", lazy="raise")


class Restock(Base):
    """A refund whose units were put back on sale: its primary key makes that happen
    once per refund, however often `order.refunded` is delivered."""

    __tablename__ = "restock"

    refund_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: Ids of the events already processed (eventbus): each takes effect once.
inbox_event = inbox_table(Base.metadata)
