"""What the product service publishes (it consumes nothing)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import add_event
from eventbus.types import PRODUCT_CREATED, PRODUCT_UPDATED, ProductChanged

SOURCE = "product_service"


class ProductFacts(Protocol):
    """What the events tell about a product (a `Product`, or a row of one)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def sku(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def is_active(self) -> bool: ...


def _data(product: ProductFacts) -> ProductChanged:
    return ProductChanged(
        product_id=product.id,
        sku=product.sku,
        name=product.name,
        price=product.price,
        is_active=product.is_active,
    )


async def stage_product_created(session: AsyncSession, product: ProductFacts) -> None:
    """`product.created`, in the transaction that adds the product."""
    await add_event(session, PRODUCT_CREATED, _data(product), SOURCE)


async def stage_product_updated(session: AsyncSession, product: ProductFacts) -> None:
    """`product.updated` (a deactivation too), in the transaction that changes it."""
    await add_event(session, PRODUCT_UPDATED, _data(product), SOURCE)
