"""Request and response models of the stock and reservation APIs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from inventory_service.config import MAX_RESERVATION_TTL_SECONDS
from inventory_service.models import ReservationStatus
from shared.schemas import RequestModel, ResponseModel, one_line_per_product

#: The most units one product may be stocked with at once.
MAX_STOCK = 1_000_000_000
#: The most units of one product a single reservation line may hold.
MAX_LINE_QUANTITY = 1_000_000
#: The most lines one reservation may have (an order has at most 50).
MAX_LINES = 100

# Strict: "5", 5.0 and true are not stock counts.
StockCount = Annotated[int, Field(strict=True, ge=0, le=MAX_STOCK)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_LINE_QUANTITY)]
ReleaseReason = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$"),
    Field(examples=["cancelled", "payment_declined", "expired"]),
]


class StockUpdate(RequestModel):
    """Units on hand and free to sell; what is reserved or sold is not touched."""

    available: StockCount


class StockRead(ResponseModel):
    product_id: uuid.UUID
    available: int
    reserved: int


class StockBatch(ResponseModel):
    items: list[StockRead]


class ReservationItem(RequestModel):
    product_id: uuid.UUID
    quantity: Quantity


class ReservationCreate(RequestModel):
    order_id: uuid.UUID
    items: Annotated[
        list[ReservationItem],
        Field(min_length=1, max_length=MAX_LINES),
        one_line_per_product("each product may appear in one line only"),
    ]
    ttl_seconds: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_RESERVATION_TTL_SECONDS,
        description="How long to hold the stock; the service's default when left out.",
    )
    sell: bool = Field(
        default=False,
        strict=True,
        description=(
            "The order is paid already: its units go straight from available to sold and"
            " the reservation is `committed`, with no commit call to follow."
        ),
    )

    def quantities(self) -> dict[uuid.UUID, int]:
        return {item.product_id: item.quantity for item in self.items}


class ReservationRelease(RequestModel):
    reason: ReleaseReason = "cancelled"


class ReservationLineRead(ResponseModel):
    product_id: uuid.UUID
    quantity: int


class ReservationRead(ResponseModel):
    order_id: uuid.UUID
    status: ReservationStatus
    #: Why the stock was given back (`released` only).
    reason: str | None
    #: Ordered by product id.
    items: list[ReservationLineRead] = Field(validation_alias="lines")
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
