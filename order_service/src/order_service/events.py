"""What the order service publishes (it consumes nothing).

Every status change is staged in the transaction that makes it: `order.created` with
the `pending` order, then `order.confirmed`, `order.cancelled` (with the cancel reason),
`order.shipped` and `order.delivered`, and `order.refunded` with each refund. Each
carries a receipt (names, prices, currency,
shipping address), so consumers never need to ask this service what was ordered."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import EventEnvelope, add_event
from eventbus.outbox import outbox_row
from eventbus.types import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_CREATED,
    ORDER_DELIVERED,
    ORDER_REFUNDED,
    ORDER_SHIPPED,
    OrderChanged,
    OrderItem,
    OrderRefunded,
    ShippingAddress,
)
from order_service.models import PurchaseOrder, Refund
from order_service.states import OrderStatus

SOURCE = "order_service"

EVENT_OF_STATUS = {
    OrderStatus.PENDING: ORDER_CREATED,
    OrderStatus.CONFIRMED: ORDER_CONFIRMED,
    OrderStatus.CANCELLED: ORDER_CANCELLED,
    OrderStatus.SHIPPED: ORDER_SHIPPED,
    OrderStatus.DELIVERED: ORDER_DELIVERED,
}


async def stage_order_event(session: AsyncSession, order: PurchaseOrder) -> None:
    """The event of the order's (new) status, in the transaction that set it.
    `order.lines` must be loaded."""
    await add_event(session, EVENT_OF_STATUS[order.status], order_changed(order), SOURCE)


def order_event_row(order: PurchaseOrder) -> dict[str, Any]:
    """The outbox row of the order's (new) status, for the checkout's single statements
    (`OrderRepository.create_claimed`, `settle_pending`)."""
    envelope = EventEnvelope.new(EVENT_OF_STATUS[order.status], order_changed(order), source=SOURCE)
    return outbox_row(envelope)


def order_changed(order: PurchaseOrder) -> OrderChanged:
    """What every order event says: the order as it is now, with its receipt."""
    return OrderChanged(
        order_id=order.id,
        user_id=order.user_id,
        status=order.status.value,
        items=[
            OrderItem(
                product_id=line.product_id,
                quantity=line.quantity,
                product_name=line.product_name,
                unit_price=line.unit_price,
                line_total=line.line_total,
            )
            for line in order.lines
        ],
        total_amount=order.total_amount,
        reason=order.cancel_reason.value if order.cancel_reason is not None else None,
        currency=order.currency,
        shipping_address=shipping_address_of(order),
    )


async def stage_refund_event(
    session: AsyncSession,
    order: PurchaseOrder,
    refund: Refund,
    bought: Mapping[uuid.UUID, tuple[str, Decimal]],
) -> None:
    """`order.refunded`, in the transaction that records the refund; `bought` is the
    (product name, unit price) of each of the order's products."""
    data = OrderRefunded(
        order_id=order.id,
        user_id=order.user_id,
        refund_id=refund.id,
        amount=refund.amount,
        items=[
            OrderItem(
                product_id=line.product_id,
                quantity=line.quantity,
                product_name=bought[line.product_id][0],
                unit_price=bought[line.product_id][1],
                line_total=line.amount,
            )
            for line in refund.lines
        ],
        restock=refund.restock,
        currency=order.currency,
        shipping_address=shipping_address_of(order),
        reason=refund.reason,
    )
    await add_event(session, ORDER_REFUNDED, data, SOURCE)


def shipping_address_of(order: PurchaseOrder) -> ShippingAddress | None:
    if order.shipping_address is None:
        return None
    return ShippingAddress.model_validate(order.shipping_address)
