"""Request and response models of the orders API."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from order_service.domain.pricing import RequestedLine
from order_service.domain.states import CancelReason, OrderStatus
from shared.schemas import Money, RequestModel, ResponseModel

MAX_LINES = 50
MAX_QUANTITY = 100


class OrderLineCreate(RequestModel):
    product_id: uuid.UUID
    # Strict: "3", 3.0 and true are not quantities.
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class OrderCreate(RequestModel):
    """What a customer orders; prices and names are the catalog's, never sent here."""

    items: list[OrderLineCreate] = Field(min_length=1, max_length=MAX_LINES)
    payment_token: Annotated[
        str,
        StringConstraints(min_length=1, max_length=255),
        Field(examples=["tok_ok"], description="From the payment provider's client SDK."),
    ]

    @field_validator("items")
    @classmethod
    def _distinct_products(cls, items: list[OrderLineCreate]) -> list[OrderLineCreate]:
        if len({item.product_id for item in items}) != len(items):
            raise ValueError("each product may appear in one line only; add up the quantities")
        return items

    def requested_lines(self) -> list[RequestedLine]:
        return [RequestedLine(item.product_id, item.quantity) for item in self.items]

    def fingerprint(self) -> str:
        """SHA-256 of the body in canonical JSON: what makes two requests "the same"."""
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class OrderLineRead(ResponseModel):
    product_id: uuid.UUID
    product_name: str
    unit_price: Money
    quantity: int
    line_total: Money


class OrderRead(ResponseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    items: list[OrderLineRead] = Field(validation_alias="lines")
    total_amount: Money
    currency: str
    cancel_reason: CancelReason | None
    created_at: datetime
    updated_at: datetime
