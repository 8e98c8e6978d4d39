"""The catalog's domain logic: what the routes call."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from product_service.errors import DuplicateSku, ProductNotFound
from product_service.events import stage_product_created, stage_product_updated
from product_service.models import Product
from product_service.repository import ProductRepository
from product_service.schemas import (
    ProductCreate,
    ProductFilters,
    ProductRead,
    ProductUpdate,
)
from shared.db import is_unique_violation, utcnow
from shared.schemas import Page, PageParams


def product_document(product: Product) -> bytes:
    """A product as `GET /products/{id}` answers it (what the document cache keeps)."""
    return ProductRead.model_validate(product).model_dump_json().encode()


class ProductService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.products = ProductRepository(session)

    async def search(self, filters: ProductFilters, page: PageParams) -> Page[ProductRead]:
        found = await self.products.search(
            text=filters.q,
            category=filters.category,
            min_price=filters.min_cents,
            max_price=filters.max_cents,
            page=page,
        )
        return found.to_page(ProductRead, page.limit)

    async def get(self, product_id: uuid.UUID, *, include_inactive: bool = False) -> Product:
        product = await self.products.get(product_id)
        if product is None or not (product.is_active or include_inactive):
            raise ProductNotFound(product_id)
        return product

    async def public_document(self, product_id: uuid.UUID) -> bytes | None:
        """An active product's document; None when it is gone or inactive."""
        product = await self.products.get(product_id)
        if product is None or not product.is_active:
            return None
        return product_document(product)

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> list[ProductRead]:
        """Products by id, active or not, in the order asked for."""
        found = {row["id"]: row for row in await self.products.get_many(product_ids)}
        return [
            ProductRead.model_validate(dict(found[product_id]))
            for product_id in dict.fromkeys(product_ids)
            if product_id in found
        ]

    async def create(self, data: ProductCreate) -> Product:
        now = utcnow()  # one instant: a new product was last updated when it was created
        product = Product(**data.model_dump(), created_at=now, updated_at=now)
        try:
            await self.products.add(product)
            await stage_product_created(self.session, product)
            await self.session.commit()
        except IntegrityError as error:
            await self.session.rollback()
            if is_unique_violation(error):
                raise DuplicateSku(data.sku) from error
            raise
        return product

    async def update(self, product_id: uuid.UUID, data: ProductUpdate) -> Product:
        changes = data.model_dump(exclude_unset=True)
        if not changes:
            return await self.get(product_id, include_inactive=True)
        try:
            product = await self.products.update(product_id, changes)
            if product is not None:
                await stage_product_updated(self.session, product)
            await self.session.commit()
        except IntegrityError as error:
            await self.session.rollback()
            if is_unique_violation(error) and data.sku is not None:
                raise DuplicateSku(data.sku) from error
            raise
        if product is None:
            raise ProductNotFound(product_id)
        return product

    async def deactivate(self, product_id: uuid.UUID) -> None:
        """Take a product off the catalog; it stays for orders that refer to it.

        Deactivating an inactive product again changes nothing and succeeds."""
        deactivated = await self.products.deactivate(product_id)
        if deactivated is not None:
            await stage_product_updated(self.session, deactivated)
        await self.session.commit()
        if deactivated is None and not await self.products.exists(product_id):
            raise ProductNotFound(product_id)
