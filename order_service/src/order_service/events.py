"""What the order service publishes (it consumes nothing).

Every status change the contract names is staged in the transaction that makes it:
`order.created` with the `pending` order, then `order.confirmed`, `order.cancelled`
(with the cancel reason) and `order.shipped`. `delivered` has no event."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import add_event
from eventbus.types import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_CREATED,
    ORDER_SHIPPED,
    OrderChanged,
    OrderItem,
)
from order_service.domain.states import OrderStatus
from order_service.models import PurchaseOrder

SOURCE = "order_service"

EVENT_OF_STATUS = {
    OrderStatus.PENDING: ORDER_CREATED,
    OrderStatus.CONFIRMED: ORDER_CONFIRMED,
    OrderStatus.CANCELLED: ORDER_CANCELLED,
    OrderStatus.SHIPPED: ORDER_SHIPPED,
}


async def stage_order_event(session: AsyncSession, order: PurchaseOrder) -> None:
    """The event of the order's (new) status, in the transaction that set it; nothing
    for a status without one. `order.lines` must be loaded."""
    type_ = EVENT_OF_STATUS.get(order.status)
    if type_ is None:
        return
    data = OrderChanged(
        order_id=order.id,
        user_id=order.user_id,
        status=order.status.value,
        items=[
            OrderItem(product_id=line.product_id, quantity=line.quantity) for line in order.lines
        ],
        total_amount=order.total_amount,
        reason=order.cancel_reason.value if order.cancel_reason is not None else None,
    )
    await add_event(session, type_, data, SOURCE)
