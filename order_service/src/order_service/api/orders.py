"""Orders: checkout for customers, their own orders to read and cancel; administrators
see every order and move it through shipping."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from order_service.deps import (
    IDEMPOTENCY_KEY_DOCUMENTED,
    IdempotencyKeyDep,
    OrderServiceDep,
    OwnedOrder,
    RefundServiceDep,
)
from order_service.schemas import (
    OrderCreate,
    OrderRead,
    RefundCreate,
    RefundRead,
    TimelineEntryRead,
)
from order_service.states import OrderStatus
from shared.auth import AdminClaims, CurrentClaims
from shared.errors import problem_answers
from shared.schemas import Page, PageDep

router = APIRouter(prefix="/v1/orders", tags=["orders"])

#: What a checkout may answer besides the order (`POST /v1/cart/checkout` too).
CHECKOUT_ANSWERS = {
    400: "Idempotency-Key missing or malformed",
    409: "A request with this Idempotency-Key is running",
    422: "Invalid body, unknown product or payment token",
    503: "A dependency is down; retry with the same key",
    504: "A dependency timed out; retry with the same key",
}
_NOT_YOURS = "No such order, or not yours"
_WRONG_STATUS = "The order's status does not allow it"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    openapi_extra=IDEMPOTENCY_KEY_DOCUMENTED,
    responses=problem_answers(CHECKOUT_ANSWERS),
)
async def place_order(
    data: OrderCreate, claims: CurrentClaims, key: IdempotencyKeyDep, orders: OrderServiceDep
) -> JSONResponse:
    """Check out: price from the catalog, take payment, take the stock, confirm.

    The answer is the order, `confirmed` or `cancelled` (`out_of_stock`,
    `payment_declined`). Retrying with the same Idempotency-Key and body replays it."""
    placed = await orders.place(claims.user_id, key, data)
    headers = {"Idempotent-Replayed": "true"} if placed.replayed else None
    return JSONResponse(placed.body, status_code=placed.status_code, headers=headers)


@router.get("")
async def list_orders(
    claims: CurrentClaims,
    orders: OrderServiceDep,
    page: PageDep,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
) -> Page[OrderRead]:
    """Your orders, newest first (every order for administrators)."""
    return await orders.page(claims, status, page)


@router.get("/{order_id}", responses=problem_answers({404: _NOT_YOURS}))
async def get_order(order: OwnedOrder) -> OrderRead:
    """One order: yours, or any for administrators."""
    return OrderRead.model_validate(order)


@router.get("/{order_id}/timeline", responses=problem_answers({404: _NOT_YOURS}))
async def get_order_timeline(order: OwnedOrder, orders: OrderServiceDep) -> list[TimelineEntryRead]:
    """What happened to the order, oldest first: created, confirmed or cancelled (the
    reason in `detail`), shipped, delivered, and each refund (its id in `detail`)."""
    return [TimelineEntryRead.model_validate(entry) for entry in await orders.timeline(order)]


@router.post(
    "/{order_id}/cancel",
    responses=problem_answers({404: _NOT_YOURS, 409: "Shipped already, or partly refunded"}),
)
async def cancel_order(order: OwnedOrder, orders: OrderServiceDep) -> OrderRead:
    """Cancel an order not shipped yet; its stock and payment go back. Cancelling a
    cancelled order changes nothing."""
    return OrderRead.model_validate(await orders.cancel(order))


@router.post(
    "/{order_id}/ship", responses=problem_answers({404: "No such order", 409: _WRONG_STATUS})
)
async def ship_order(
    order_id: uuid.UUID, orders: OrderServiceDep, _admin: AdminClaims
) -> OrderRead:
    """Mark a confirmed order shipped (administrators)."""
    return OrderRead.model_validate(await orders.ship(order_id))


@router.post(
    "/{order_id}/deliver", responses=problem_answers({404: "No such order", 409: _WRONG_STATUS})
)
async def deliver_order(
    order_id: uuid.UUID, orders: OrderServiceDep, _admin: AdminClaims
) -> OrderRead:
    """Mark a shipped order delivered (administrators)."""
    return OrderRead.model_validate(await orders.deliver(order_id))


@router.post(
    "/{order_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    response_model=RefundRead,
    openapi_extra=IDEMPOTENCY_KEY_DOCUMENTED,
    responses=problem_answers(
        {
            400: "Idempotency-Key missing or malformed",
            404: "No such order",
            409: "The order is not paid for (pending or cancelled)",
            422: "More units than are left to refund, or a bad body",
        }
    ),
)
async def refund_order(
    order_id: uuid.UUID,
    data: RefundCreate,
    admin: AdminClaims,
    key: IdempotencyKeyDep,
    refunds: RefundServiceDep,
) -> JSONResponse:
    """Pay back units of a confirmed, shipped or delivered order (administrators);
    `restock` puts them back on sale. Retrying with the same Idempotency-Key and body
    replays the refund."""
    answer = await refunds.refund(order_id, admin.user_id, key, data)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(
        answer.refund.model_dump(mode="json"), status_code=status.HTTP_201_CREATED, headers=headers
    )


@router.get("/{order_id}/refunds", responses=problem_answers({404: _NOT_YOURS}))
async def list_refunds(
    order: OwnedOrder, refunds: RefundServiceDep, page: PageDep
) -> Page[RefundRead]:
    """The order's refunds, newest first."""
    return await refunds.page(order, page)
