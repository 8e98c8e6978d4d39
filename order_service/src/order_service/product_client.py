"""What the order service asks product_service (its internal API): the catalog's prices.

Calls go through the process's one `ServiceClient`: a service that cannot be reached
or times out comes out as its 503/504 problem error, and an answer this wrapper cannot
use (an unexpected status, a body that does not parse) is a 503 too (`unusable_answer`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from order_service.pricing import CatalogProduct
from shared.http import ServiceClient, get_batch

PRODUCT_UPSTREAM = "product"


class _CatalogItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    name: str
    price: Decimal
    currency: str
    is_active: bool


class _CatalogBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[_CatalogItem]


class ProductClient:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def get_products(
        self, product_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, CatalogProduct]:
        """The products the catalog knows among `product_ids` (active or not), by id."""
        batch = await get_batch(
            self.client,
            PRODUCT_UPSTREAM,
            "/internal/v1/products",
            product_ids,
            _CatalogBatch,
            "a product lookup",
        )
        return {
            item.id: CatalogProduct(
                id=item.id,
                name=item.name,
                price=item.price,
                currency=item.currency,
                is_active=item.is_active,
            )
            for item in batch.items
        }
