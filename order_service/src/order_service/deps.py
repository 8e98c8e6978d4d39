"""Annotated dependency aliases of the order service's routes."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import Depends, Header, Request

from order_service.clients import Catalog, Inventory
from order_service.config import Settings
from order_service.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing
from order_service.models import PurchaseOrder
from order_service.payments import PaymentProvider
from order_service.service import CartService, OrderService, RefundService
from shared.auth import CurrentClaims
from shared.service import HttpClientDep, SessionDep

#: 1..255 printable ASCII characters (space to tilde).
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")


async def get_order_service(
    request: Request, session: SessionDep, client: HttpClientDep
) -> OrderService:
    settings: Settings = request.app.state.settings
    payments: PaymentProvider = request.app.state.payments
    return OrderService(
        session,
        Catalog(client),
        Inventory(client, ttl_seconds=settings.reservation_ttl_seconds),
        payments,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]


async def get_cart_service(orders: OrderServiceDep) -> CartService:
    return CartService(orders.session, orders.saga.catalog, orders.saga.inventory, orders)


CartServiceDep = Annotated[CartService, Depends(get_cart_service)]


async def get_refund_service(request: Request, session: SessionDep) -> RefundService:
    payments: PaymentProvider = request.app.state.payments
    return RefundService(session, payments)


RefundServiceDep = Annotated[RefundService, Depends(get_refund_service)]


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="A unique value per order (a UUID, say), sent again unchanged "
            "when the request is retried; 1..255 printable ASCII characters.",
        ),
    ] = None,
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
