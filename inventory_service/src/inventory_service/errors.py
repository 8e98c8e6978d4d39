"""The inventory's problem types: what its routes answer when a request cannot be done."""

from __future__ import annotations

import uuid

from inventory_service.models import Reservation
from shared.errors import Conflict, NotFound


class StockNotFound(NotFound):
    title = "No stock record"
    type_slug = "stock-not-found"

    def __init__(self, product_id: uuid.UUID) -> None:
        super().__init__(
            f"There is no stock record for product {product_id}.",
            extra={"product_id": str(product_id)},
        )


class ProductNotFound(NotFound):
    title = "Product not found"
    type_slug = "product-not-found"

    def __init__(self, product_id: uuid.UUID) -> None:
        super().__init__(
            f"The catalog has no product with id {product_id}.",
            extra={"product_id": str(product_id)},
        )


class InsufficientStock(Conflict):
    title = "Insufficient stock"
    type_slug = "insufficient-stock"

    def __init__(self, product_id: uuid.UUID) -> None:
        super().__init__(
            f"Product {product_id} does not have the quantity asked for available; "
            "nothing was reserved.",
            extra={"product_id": str(product_id)},
        )


class ReservationNotFound(NotFound):
    title = "Reservation not found"
    type_slug = "reservation-not-found"

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(
            f"There is no reservation for order {order_id}.", extra={"order_id": str(order_id)}
        )


class ReservationMismatch(Conflict):
    title = "Reservation exists with other lines"
    type_slug = "reservation-mismatch"

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(
            f"Order {order_id} already has a reservation with other products or quantities.",
            extra={"order_id": str(order_id)},
        )


class ReservationReleased(Conflict):
    title = "Reservation released"
    type_slug = "reservation-released"

    def __init__(self, reservation: Reservation) -> None:
        super().__init__(
            f"The reservation for order {reservation.order_id} was released "
            f"({reservation.reason}); its stock is no longer held.",
            extra={"order_id": str(reservation.order_id), "reason": reservation.reason},
        )
