"""ORM tables of the catalog."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, String, Text, TextClause, text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventbus import outbox_table
from shared.db import IdMixin, TimestampMixin, service_registry


class Base(DeclarativeBase):
    registry = service_registry()


def _active_products_index(name: str, *columns: str | TextClause) -> Index:
    """An index of the active products only: the public list never shows the others."""
    return Index(
        name,
        *columns,
        postgresql_where=text("is_active"),
        sqlite_where=text("is_active = 1"),  # as SQLAlchemy writes `is_active == true()`
    )


class Product(IdMixin, TimestampMixin, Base):
    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        # One index per filter combination of the public list: newest first (and the
        # keyset of its cursors), by category, by price range, by both. Text search has
        # GIN indexes on PostgreSQL (migration 0003), which SQLite has no use for.
        _active_products_index("ix_product_active_created_at", "created_at", "id"),
        _active_products_index(
            "ix_product_active_category_created_at", "category", "created_at", "id"
        ),
        _active_products_index("ix_product_active_price", "price"),
        _active_products_index("ix_product_active_category_price", "category", "price"),
        # A search's exact matches (a name or SKU equal to `q`, ignoring case) come first:
        # found through these rather than by lowering every match's name and SKU.
        _active_products_index("ix_product_active_lower_name", text("lower(name)")),
        _active_products_index("ix_product_active_lower_sku", text("lower(sku)")),
    )

    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    price: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    category: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())


#: Events waiting for the relay (eventbus): written with the change they report.
outbox_event = outbox_table(Base.metadata)
