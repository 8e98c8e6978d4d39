"""What the inventory service does with the events it consumes (it publishes none):
`product.*` gives a product its stock record, `order.cancelled` gives the order's stock
back, `order.refunded` with `restock` puts the refunded units back on sale.

`order.confirmed` is not taken: it never leaves anything to do here. The checkout saga
confirms an order only after this service answered that the order's units are sold
(sold at once for a paid order, or a held reservation committed by the saga of an
earlier version), so by the time the event exists they are. A handler for it would cost
every order a delivery, an inbox row and a transaction, to change nothing.

Each handler runs in the consumer's transaction, with the event id's inbox row: it
issues SQL and does not commit. The queue (`inventory_service.events`) is bound to
exactly the types registered here.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import EventEnvelope, EventHandlers
from eventbus.types import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_REFUNDED,
    PRODUCT_CREATED,
    PRODUCT_UPDATED,
    OrderChanged,
    OrderRefunded,
    ProductChanged,
)
from inventory_service.metrics import count_reservation
from inventory_service.repository import StockRepository
from inventory_service.service import ReservationService
from shared.db import utcnow

logger = logging.getLogger(__name__)

handlers = EventHandlers()
# Taken until the checkout sold a paid order's units in one call (see the module).
handlers.retire(ORDER_CONFIRMED)


@handlers.on(PRODUCT_CREATED, PRODUCT_UPDATED)
async def create_stock_record(session: AsyncSession, event: EventEnvelope) -> None:
    """A catalog product gets a stock record with nothing available, unless it has one
    already (an administrator's PUT may come first; it is never overwritten).

    `product.updated` does the same, so products created before this consumer existed
    get their record at their next change."""
    product = ProductChanged.model_validate(event.data)
    if await StockRepository(session).create_if_missing(product.product_id, utcnow()):
        logger.info("stock record created", extra={"product_id": str(product.product_id)})


# The checkout saga releases the stock of an order it cancels over HTTP
# (/internal/v1/...): that path is primary and usually gets there first, so this handler
# is mostly a no-op. It is the safety net for a call that was lost (order_service
# crashed after cancelling the order, or inventory was unreachable and the sweep has not
# come round yet). It is a conditional status change, so running it after the HTTP call,
# or twice, changes nothing; it runs in the consumer's transaction, with the event's
# inbox row.


@handlers.on(ORDER_CANCELLED)
async def release_reservation(session: AsyncSession, event: EventEnvelope) -> None:
    """The cancelled order's stock, held or sold, goes back (unless it went back already,
    or the order never held any)."""
    order = OrderChanged.model_validate(event.data)
    reason = (order.reason or "cancelled")[:64]
    if await ReservationService(session).release_held_or_sold(order.order_id, reason):
        count_reservation("released", reason)
        logger.info(
            "reservation released from order.cancelled",
            extra={"order_id": str(order.order_id), "reason": reason},
        )


@handlers.on(ORDER_REFUNDED)
async def restock_refunded_units(session: AsyncSession, event: EventEnvelope) -> None:
    """Refunded units asked back on sale move from sold to available, once per refund
    (the inbox drops a repeated event; the restock record, a repeated refund)."""
    refund = OrderRefunded.model_validate(event.data)
    if not refund.restock:
        return
    lines = [(item.product_id, item.quantity) for item in refund.items]
    if await ReservationService(session).restock(refund.refund_id, refund.order_id, lines):
        count_reservation("restocked")
        logger.info(
            "refunded units restocked",
            extra={"order_id": str(refund.order_id), "refund_id": str(refund.refund_id)},
        )
