"""The problems the order service answers with on purpose (RFC 9457 documents)."""

from __future__ import annotations

import uuid
from typing import Any

from order_service.states import OrderStatus
from shared.errors import (
    BadRequest,
    Conflict,
    ResourceNotFound,
    ServiceUnavailable,
    UnprocessableEntity,
)


def field_error(loc: list[str | int], msg: str, type_: str) -> dict[str, Any]:
    """One entry of a problem's `errors`, shaped like the request validator's."""
    return {"loc": loc, "msg": msg, "type": type_}


class OrderNotFound(ResourceNotFound):
    title = "Order not found"
    type_slug = "order-not-found"
    resource = "order"


class OrderStatusConflict(Conflict):
    title = "Order status does not allow this"
    type_slug = "order-status-conflict"

    def __init__(self, order_id: uuid.UUID, status: OrderStatus, action: str) -> None:
        super().__init__(
            f"Order {order_id} is {status.value}; it cannot be {action}.",
            extra={"order_id": str(order_id), "order_status": status.value},
        )


class ProductUnavailable(UnprocessableEntity):
    title = "Product unavailable"
    type_slug = "product-unavailable"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(
            "Some products ordered are not in the catalog or no longer sold; see `errors`.",
            extra={"errors": errors},
        )


class MixedCurrencies(UnprocessableEntity):
    title = "Mixed currencies"
    type_slug = "mixed-currencies"

    def __init__(self, currencies: list[str]) -> None:
        super().__init__(
            "One order is paid in one currency; these products are priced in "
            f"{', '.join(currencies)}. Order them separately.",
            extra={"currencies": currencies},
        )


class InvalidPaymentToken(UnprocessableEntity):
    title = "Validation failed"
    type_slug = "validation-failed"

    def __init__(self) -> None:
        super().__init__(
            "The payment token is not one the payment provider knows.",
            extra={
                "errors": [
                    field_error(
                        ["body", "payment_token"], "unknown payment token", "payment_token_invalid"
                    )
                ]
            },
        )


class IdempotencyKeyMissing(BadRequest):
    title = "Idempotency-Key required"
    type_slug = "idempotency-key-missing"

    def __init__(self) -> None:
        super().__init__(
            "Placing an order needs an Idempotency-Key header (a unique value per order, "
            "sent again unchanged when the request is retried)."
        )


class IdempotencyKeyInvalid(BadRequest):
    title = "Invalid Idempotency-Key"
    type_slug = "idempotency-key-invalid"

    def __init__(self) -> None:
        super().__init__("The Idempotency-Key must be 1 to 255 printable ASCII characters.")


class IdempotencyKeyReused(UnprocessableEntity):
    title = "Idempotency-Key reused"
    type_slug = "idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new order."
        )


class IdempotencyKeyInProgress(Conflict):
    title = "Request in progress"
    type_slug = "idempotency-key-in-progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            headers={"Retry-After": "1"},
        )


class CartFull(Conflict):
    title = "Cart full"
    type_slug = "cart-full"

    def __init__(self, max_lines: int) -> None:
        super().__init__(
            f"A cart holds at most {max_lines} products; check out or remove some first.",
            extra={"max_lines": max_lines},
        )


class CartEmpty(Conflict):
    title = "Cart empty"
    type_slug = "cart-empty"

    def __init__(self) -> None:
        super().__init__("The cart is empty; add products before checking out.")


class RefundExceedsOrder(UnprocessableEntity):
    title = "Refund exceeds the order"
    type_slug = "refund-exceeds-order"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(
            "Some lines ask to refund more units than the order has left to refund, or "
            "products it does not have; see `errors`.",
            extra={"errors": errors},
        )


class OrderHasRefunds(Conflict):
    title = "Order has refunds"
    type_slug = "order-has-refunds"

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(
            f"Order {order_id} was partly refunded, so it cannot be cancelled; refund the "
            "rest of it instead.",
            extra={"order_id": str(order_id)},
        )


class CheckoutsBusy(ServiceUnavailable):
    title = "Too many checkouts in progress"
    type_slug = "checkouts-busy"

    def __init__(self) -> None:
        super().__init__(
            "Every checkout slot stayed taken for as long as this request could wait; "
            "nothing was ordered. Retry with the same Idempotency-Key.",
            headers={"Retry-After": "1"},
        )
