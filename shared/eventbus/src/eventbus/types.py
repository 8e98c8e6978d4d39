"""The contract's event types and the shape of their `data`.

Producers build `data` from these models; consumers read it back with
`Model.model_validate(envelope.data)`. Extra fields are ignored, so a producer can add
one without breaking older consumers.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer

USER_REGISTERED = "user.registered"
PRODUCT_CREATED = "product.created"
PRODUCT_UPDATED = "product.updated"
ORDER_CREATED = "order.created"
ORDER_CONFIRMED = "order.confirmed"
ORDER_CANCELLED = "order.cancelled"
ORDER_SHIPPED = "order.shipped"
ORDER_DELIVERED = "order.delivered"
ORDER_REFUNDED = "order.refunded"

#: Every type of the contract's "Events" list (what a webhook may subscribe to).
EVENT_TYPES = (
    USER_REGISTERED,
    PRODUCT_CREATED,
    PRODUCT_UPDATED,
    ORDER_CREATED,
    ORDER_CONFIRMED,
    ORDER_CANCELLED,
    ORDER_SHIPPED,
    ORDER_DELIVERED,
    ORDER_REFUNDED,
)

#: Money in events is what it is in the API: a decimal string with two places.
MoneyString = Annotated[Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str)]


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class UserRegistered(EventData):
    """`user.registered`"""

    user_id: uuid.UUID
    email: str
    full_name: str


class ProductChanged(EventData):
    """`product.created` and `product.updated` (a deactivated product is an update with
    `is_active: false`)."""

    product_id: uuid.UUID
    sku: str
    name: str
    price: MoneyString
    is_active: bool


class ShippingAddress(EventData):
    full_name: str
    line1: str
    line2: str | None = None
    city: str
    postal_code: str
    #: ISO 3166-1 alpha-2.
    country: str


class OrderItem(EventData):
    """One line of an order. The receipt fields (name, prices) were added later: events
    published before them lack them, so they may be None."""

    product_id: uuid.UUID
    quantity: int
    product_name: str | None = None
    unit_price: MoneyString | None = None
    #: `unit_price` x `quantity` (an order's line), or the amount paid back (a refund's).
    line_total: MoneyString | None = None


class OrderChanged(EventData):
    """`order.created`, `order.confirmed`, `order.cancelled`, `order.shipped`,
    `order.delivered`. `currency` and `shipping_address` were added later (None in
    older events; the address is None too when the order has none)."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    items: list[OrderItem]
    total_amount: MoneyString
    reason: str | None = None
    currency: str | None = None
    shipping_address: ShippingAddress | None = None


class OrderRefunded(EventData):
    """`order.refunded`: `amount` paid back for `items` (their `line_total` is each
    line's share); `restock` asks inventory to put the units back on sale."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    refund_id: uuid.UUID
    amount: MoneyString
    items: list[OrderItem]
    restock: bool
    currency: str | None = None
    shipping_address: ShippingAddress | None = None
    reason: str | None = None
