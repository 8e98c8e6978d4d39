"""Request and response models of the catalog API."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from shared.schemas import (
    Money,
    PartialUpdate,
    RequestModel,
    ResponseModel,
    multi_line,
    single_line,
)

CENT = Decimal("0.01")
#: Keeps an order of 50 lines x 100 items within the Numeric(12, 2) columns downstream.
MAX_PRICE = Decimal("1000000.00")
#: The largest amount a Numeric(12, 2) column holds; price filters stop there.
MAX_FILTER_PRICE = Decimal("9999999999.99")


Price = Annotated[Money, Field(gt=0, le=MAX_PRICE)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(examples=["USD"])]
Sku = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_-]{1,64}$"),
    Field(examples=["KB-MX-001"]),
]
ProductName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(single_line),
]
Description = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=5000), AfterValidator(multi_line)
]
Category = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=100),
    AfterValidator(single_line),
    Field(examples=["electronics"]),
]


class ProductCreate(RequestModel):
    sku: Sku
    name: ProductName
    description: Description = ""
    price: Price
    currency: Currency = "USD"
    category: Category


class ProductUpdate(PartialUpdate):
    """Only the fields sent are changed; `is_active: true` brings a product back."""

    sku: Sku | None = None
    name: ProductName | None = None
    description: Description | None = None
    price: Price | None = None
    currency: Currency | None = None
    category: Category | None = None
    is_active: bool | None = None


class ProductRead(ResponseModel):
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price: Money
    currency: str
    category: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ProductBatch(BaseModel):
    """Products looked up by id; ids that match nothing are left out."""

    items: list[ProductRead]


class ProductFilters(BaseModel):
    """Search criteria of the public list (query parameters)."""

    q: str | None = Field(
        default=None,
        max_length=200,
        description='Search text, read like a web search box (words, "phrases", or,'
        " -excluded) over the SKU, name, category and description; tolerant of small"
        " misspellings; most relevant first.",
    )
    category: str | None = Field(default=None, max_length=100, description="Exact category.")
    min_price: Decimal | None = Field(default=None, ge=0, le=MAX_FILTER_PRICE)
    max_price: Decimal | None = Field(default=None, ge=0, le=MAX_FILTER_PRICE)

    @field_validator("q", "category")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return single_line(value.strip()) or None

    @field_validator("category")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None

    @field_validator("max_price")
    @classmethod
    def _check_price_range(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        min_price = info.data.get("min_price")
        if value is not None and min_price is not None and min_price > value:
            raise ValueError("max_price must not be less than min_price")
        return value

    @property
    def min_cents(self) -> Decimal | None:
        """The lower bound in whole cents (prices have two places, so round up)."""
        return None if self.min_price is None else self.min_price.quantize(CENT, ROUND_CEILING)

    @property
    def max_cents(self) -> Decimal | None:
        """The upper bound in whole cents (round down)."""
        return None if self.max_price is None else self.max_price.quantize(CENT, ROUND_FLOOR)
