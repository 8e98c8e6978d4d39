"""The order's state machine: which status may follow which.

    pending ──> confirmed ──> shipped ──> delivered
       │            │
       └────────────┴──> cancelled (out_of_stock | payment_declined |
                                    cancelled_by_user | expired)

Every transition is written as one conditional UPDATE (`WHERE status IN (<sources>)`),
so of two concurrent transitions from the same status only one can win.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_DECLINED = "payment_declined"
    CANCELLED_BY_USER = "cancelled_by_user"
    EXPIRED = "expired"


#: Status -> the statuses it may move to.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED}),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


def sources_of(target: OrderStatus) -> frozenset[OrderStatus]:
    """The statuses an order may be in to move to `target`."""
    return frozenset(status for status, targets in TRANSITIONS.items() if target in targets)


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


#: Cancelling gives stock back (and refunds) only from these; later it is too late.
CANCELLABLE = sources_of(OrderStatus.CANCELLED)

#: An order's units may be refunded once paid for, until the end (refunds change no status).
REFUNDABLE = frozenset({OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED})


class TimelineEvent(StrEnum):
    """What an order's timeline records: each status change, and each refund."""

    CREATED = "created"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    REFUNDED = "refunded"


#: The timeline event of reaching each status.
TIMELINE_EVENT_OF_STATUS: dict[OrderStatus, TimelineEvent] = {
    OrderStatus.PENDING: TimelineEvent.CREATED,
    OrderStatus.CONFIRMED: TimelineEvent.CONFIRMED,
    OrderStatus.CANCELLED: TimelineEvent.CANCELLED,
    OrderStatus.SHIPPED: TimelineEvent.SHIPPED,
    OrderStatus.DELIVERED: TimelineEvent.DELIVERED,
}
