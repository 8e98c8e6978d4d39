"""The customer's cart: lines to set and remove, shown at the catalog's current prices
with the stock available now, and checked out into an order."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from order_service.api.orders import CHECKOUT_ANSWERS
from order_service.deps import IDEMPOTENCY_KEY_DOCUMENTED, CartServiceDep, IdempotencyKeyDep
from order_service.schemas import CartCheckout, CartLineUpdate, CartRead, OrderRead
from shared.auth import CurrentClaims
from shared.errors import problem_answers

router = APIRouter(prefix="/v1/cart", tags=["cart"])


@router.get("")
async def get_cart(claims: CurrentClaims, carts: CartServiceDep) -> CartRead:
    """Your cart (empty when you have none), at the catalog's prices now; `available`
    is null while the stock cannot be read."""
    return await carts.view(claims.user_id)


@router.put(
    "/items/{product_id}",
    responses=problem_answers(
        {
            409: "The cart has 50 lines already",
            422: "Unknown or inactive product, or a bad quantity",
        }
    ),
)
async def set_cart_line(
    product_id: uuid.UUID, data: CartLineUpdate, claims: CurrentClaims, carts: CartServiceDep
) -> CartRead:
    """Set how many units of a product the cart holds (1..100)."""
    return await carts.set_line(claims.user_id, product_id, data.quantity)


@router.delete("/items/{product_id}")
async def remove_cart_line(
    product_id: uuid.UUID, claims: CurrentClaims, carts: CartServiceDep
) -> CartRead:
    """Take a product out of the cart (a product not in it changes nothing)."""
    return await carts.remove_line(claims.user_id, product_id)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def clear_cart(claims: CurrentClaims, carts: CartServiceDep) -> Response:
    """Empty the cart."""
    await carts.clear(claims.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/checkout",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    openapi_extra=IDEMPOTENCY_KEY_DOCUMENTED,
    responses=problem_answers(
        {**CHECKOUT_ANSWERS, 409: "Empty cart, or this Idempotency-Key is running"}
    ),
)
async def check_out_cart(
    data: CartCheckout, claims: CurrentClaims, key: IdempotencyKeyDep, carts: CartServiceDep
) -> JSONResponse:
    """Order the cart's lines exactly as POST /v1/orders would; a confirmed order
    empties the cart, any other outcome leaves it as it was."""
    placed = await carts.checkout(claims.user_id, key, data)
    headers = {"Idempotent-Replayed": "true"} if placed.replayed else None
    return JSONResponse(placed.body, status_code=placed.status_code, headers=headers)
