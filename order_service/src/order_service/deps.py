"""Annotated dependency aliases of the order service's routes."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import Depends, Header

from order_service.checkout import CheckoutLimit, Compensator
from order_service.config import Settings
from order_service.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing
from order_service.inventory_client import InventoryClient
from order_service.models import PurchaseOrder
from order_service.payments import PaymentProvider
from order_service.product_client import ProductClient
from order_service.service import CartService, OrderService, RefundService
from order_service.status_watch import OrderStatusWatch
from shared.auth import CurrentClaims
from shared.service import HttpClientDep, SessionDep, app_settings, from_state

#: 1..255 printable ASCII characters (space to tilde).
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")

SettingsDep = Annotated[Settings, Depends(app_settings)]


get_payments = from_state("payments")
get_compensator = from_state("compensator")
get_status_watch = from_state("status_watch")
get_checkout_limit = from_state("checkout_limit")

PaymentsDep = Annotated[PaymentProvider, Depends(get_payments)]
CompensatorDep = Annotated[Compensator, Depends(get_compensator)]
StatusWatchDep = Annotated[OrderStatusWatch, Depends(get_status_watch)]
CheckoutLimitDep = Annotated[CheckoutLimit, Depends(get_checkout_limit)]


async def get_order_service(
    session: SessionDep,
    client: HttpClientDep,
    settings: SettingsDep,
    payments: PaymentsDep,
    compensator: CompensatorDep,
    checkout_limit: CheckoutLimitDep,
) -> OrderService:
    return OrderService(
        session,
        ProductClient(client),
        InventoryClient(client, ttl_seconds=settings.reservation_ttl_seconds),
        payments,
        compensator,
        checkout_limit,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]


async def get_cart_service(orders: OrderServiceDep) -> CartService:
    return CartService(orders.session, orders.saga.catalog, orders.saga.inventory, orders)


CartServiceDep = Annotated[CartService, Depends(get_cart_service)]


async def get_refund_service(session: SessionDep, payments: PaymentsDep) -> RefundService:
    return RefundService(session, payments)


RefundServiceDep = Annotated[RefundService, Depends(get_refund_service)]


#: How a route that takes `IdempotencyKeyDep` documents the header: required. The
#: dependency itself reads it as optional, to answer its absence with the contract's 400
#: rather than FastAPI's 422.
IDEMPOTENCY_KEY_DOCUMENTED: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "A unique value per request (a UUID, say), sent again unchanged "
            "when the request is retried; 1..255 printable ASCII characters.",
            "schema": {"type": "string", "pattern": _IDEMPOTENCY_KEY.pattern},
        }
    ]
}


async def idempotency_key(
    key: Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)] = None,
) -> str:
    if key is None:
        raise IdempotencyKeyMissing()
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise IdempotencyKeyInvalid()
    return key


IdempotencyKeyDep = Annotated[str, Depends(idempotency_key)]


async def valid_owned_order(
    order_id: uuid.UUID, claims: CurrentClaims, orders: OrderServiceDep
) -> PurchaseOrder:
    """The order in the path, if the caller owns it or is an administrator; else 404."""
    return await orders.get_visible(order_id, claims)


OwnedOrder = Annotated[PurchaseOrder, Depends(valid_owned_order)]
