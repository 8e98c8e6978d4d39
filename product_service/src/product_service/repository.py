"""SQL of the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Row, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from product_service.models import Product

_LIKE_ESCAPE = "\\"


def _contains_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with its wildcards taken literally."""
    for char in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(char, _LIKE_ESCAPE + char)
    return f"%{text}%"


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, product_id: uuid.UUID) -> Product | None:
        return await self.session.get(Product, product_id)

    async def get_many(self, product_ids: Iterable[uuid.UUID]) -> Sequence[Product]:
        statement = select(Product).where(Product.id.in_(set(product_ids)))
        return (await self.session.scalars(statement)).all()

    async def search(
        self,
        *,
        text: str | None,
        category: str | None,
        min_price: Decimal | None,
        max_price: Decimal | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Product], int]:
        """One page of active products matching every criterion given, newest first,
        and how many match in all."""
        conditions: list[ColumnElement[bool]] = [Product.is_active == true()]
        if text is not None:
            pattern = _contains_pattern(text)
            conditions.append(
                or_(
                    Product.name.ilike(pattern, escape=_LIKE_ESCAPE),
                    Product.description.ilike(pattern, escape=_LIKE_ESCAPE),
                    Product.sku.ilike(pattern, escape=_LIKE_ESCAPE),
                )
            )
        if category is not None:
            conditions.append(Product.category == category)
        if min_price is not None:
            conditions.append(Product.price >= min_price)
        if max_price is not None:
            conditions.append(Product.price <= max_price)

        total = await self.session.scalar(
            select(func.count()).select_from(Product).where(*conditions)
        )
        page = select(Product).where(*conditions)
        # Ids break ties between rows created in the same instant, so pages never overlap.
        page = page.order_by(Product.created_at.desc(), Product.id.desc())
        items = (await self.session.scalars(page.limit(limit).offset(offset))).all()
        return items, total or 0

    async def add(self, product: Product) -> Product:
        self.session.add(product)
        await self.session.flush()
        return product

    async def update(self, product_id: uuid.UUID, values: dict[str, Any]) -> Product | None:
        """Change the given columns in one statement; None when there is no such product."""
        statement = (
            update(Product)
            .where(Product.id == product_id)
            .values(**values)
            .returning(Product)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def deactivate(self, product_id: uuid.UUID) -> Product | None:
        """Mark an active product inactive and return it; None when none was active."""
        statement = (
            update(Product)
            .where(Product.id == product_id, Product.is_active == true())
            .values(is_active=False)
            .returning(Product)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def exists(self, product_id: uuid.UUID) -> bool:
        statement = select(Product.id).where(Product.id == product_id)
        return (await self.session.scalar(statement)) is not None

    async def insert_missing(
        self, rows: Sequence[dict[str, Any]]
    ) -> Sequence[Row[uuid.UUID, str, str, Decimal, bool]]:
        """Insert the rows whose SKU is not taken yet; returns the products inserted
        (id, sku, name, price, is_active).

        `ON CONFLICT DO NOTHING` settles it in the database, so concurrent runs are safe."""
        if not rows:
            return []
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Product)
            .values([{"id": uuid.uuid4(), **row} for row in rows])
            .on_conflict_do_nothing(index_elements=[Product.sku])
            .returning(Product.id, Product.sku, Product.name, Product.price, Product.is_active)
        )
        return (await self.session.execute(statement)).all()
