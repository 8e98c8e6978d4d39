"""ORM tables of the catalog."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, MetaData, String, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventbus import outbox_table
from shared.db import NAMING_CONVENTION, TYPE_ANNOTATION_MAP, IdMixin, TimestampMixin


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = TYPE_ANNOTATION_MAP


class Product(IdMixin, TimestampMixin, Base):
    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        # The public list: active products, newest first.
        Index("ix_product_is_active_created_at", "is_active", "created_at"),
    )

    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    price: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    category: Mapped[str] = mapped_column(String(100), index=True)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())


#: Events waiting for the relay (eventbus): written with the change they report.
outbox_event = outbox_table(Base.metadata)
