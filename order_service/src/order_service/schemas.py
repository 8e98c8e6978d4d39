"""Request and response models of the orders API."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from order_service.pricing import RequestedLine
from order_service.states import CancelReason, OrderStatus, TimelineEvent
from shared.schemas import (
    Money,
    MultiLineText,
    RequestModel,
    ResponseModel,
    SingleLineText,
    one_line_per_product,
)

MAX_LINES = 50
ONE_LINE_PER_PRODUCT = "each product may appear in one line only; add up the quantities"
MAX_QUANTITY = 100


def _iso_country(code: str) -> str:
    # pycountry's copy of the ISO 3166-1 list, not a hand-kept one: codes do change.
    if pycountry.countries.get(alpha_2=code) is None:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return code


AddressText = Annotated[SingleLineText, StringConstraints(min_length=1, max_length=200)]
CountryCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{2}$"),
    AfterValidator(_iso_country),
    Field(examples=["DE"], description="ISO 3166-1 alpha-2 code, upper case."),
]


class ShippingAddress(RequestModel):
    full_name: AddressText
    line1: AddressText
    line2: AddressText | None = None
    city: AddressText
    postal_code: AddressText
    country: CountryCode


class ShippingAddressRead(ResponseModel):
    full_name: str
    line1: str
    line2: str | None = None
    city: str
    postal_code: str
    country: str


class OrderLineCreate(RequestModel):
    product_id: uuid.UUID
    # Strict: "3", 3.0 and true are not quantities.
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class OrderCreate(RequestModel):
    """What a customer orders; prices and names are the catalog's, never sent here."""

    items: Annotated[
        list[OrderLineCreate],
        Field(min_length=1, max_length=MAX_LINES),
        one_line_per_product(ONE_LINE_PER_PRODUCT),
    ]
    payment_token: Annotated[
        str,
        StringConstraints(min_length=1, max_length=255),
        Field(examples=["tok_ok"], description="From the payment provider's client SDK."),
    ]
    shipping_address: ShippingAddress | None = None

    def requested_lines(self) -> list[RequestedLine]:
        return [RequestedLine(item.product_id, item.quantity) for item in self.items]

    def fingerprint(self) -> str:
        """SHA-256 of the body in canonical JSON: what makes two requests "the same"."""
        # Without the fields left out, so adding an optional field keeps the keys stored
        # before it matching their retries.
        return fingerprint(self.model_dump(mode="json", exclude_none=True))


def fingerprint(body: object) -> str:
    """SHA-256 of `body` in canonical JSON: what makes two requests "the same"."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
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
    shipping_address: ShippingAddressRead | None
    refunded_amount: Money
    created_at: datetime
    updated_at: datetime


class TimelineEntryRead(ResponseModel):
    event: TimelineEvent
    #: The order's status right after the event.
    status: OrderStatus
    #: The cancel reason (`cancelled`) or the refund's id (`refunded`); else null.
    detail: str | None
    at: datetime


class CartLineUpdate(RequestModel):
    # Strict: "3", 3.0 and true are not quantities.
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class CartCheckout(RequestModel):
    """Check the cart out: its lines become an order, as POST /v1/orders would place it."""

    payment_token: Annotated[
        str,
        StringConstraints(min_length=1, max_length=255),
        Field(examples=["tok_ok"], description="From the payment provider's client SDK."),
    ]
    shipping_address: ShippingAddress | None = None

    def fingerprint(self) -> str:
        # Marked as a cart's, so one key cannot replay a POST /v1/orders answer here.
        return fingerprint({"cart_checkout": self.model_dump(mode="json", exclude_none=True)})


class CartLineRead(BaseModel):
    product_id: uuid.UUID
    #: The catalog's name and price now; the order takes them at checkout.
    product_name: str
    unit_price: Money
    quantity: int
    line_total: Money
    #: Units available now; 0 for a product no longer sold; null while inventory does
    #: not answer.
    available: int | None


class CartRead(BaseModel):
    items: list[CartLineRead]
    total_amount: Money
    #: The currency of the lines' prices; null for an empty cart.
    currency: str | None
    #: When a line was last changed; null for a cart never used.
    updated_at: datetime | None


class RefundLineCreate(RequestModel):
    product_id: uuid.UUID
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]


class RefundCreate(RequestModel):
    """Units of an order's lines to pay back; `restock` puts them back on sale."""

    lines: Annotated[
        list[RefundLineCreate],
        Field(min_length=1, max_length=MAX_LINES),
        one_line_per_product(ONE_LINE_PER_PRODUCT),
    ]
    restock: Annotated[bool, Field(strict=True)] = False
    reason: Annotated[MultiLineText, StringConstraints(min_length=1, max_length=500)] | None = None

    def fingerprint(self, order_id: uuid.UUID) -> str:
        body = self.model_dump(mode="json", exclude_none=True)
        return fingerprint({"refund_of": str(order_id), **body})


class RefundLineRead(ResponseModel):
    product_id: uuid.UUID
    quantity: int
    amount: Money


class RefundRead(ResponseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    amount: Money
    lines: list[RefundLineRead]
    restock: bool
    reason: str | None
    created_at: datetime
