"""Pricing an order from the catalog: names and prices never come from the client."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from order_service.errors import MixedCurrencies, ProductUnavailable, field_error

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    """What the order service needs of a product, as the catalog has it now."""

    id: uuid.UUID
    name: str
    price: Decimal
    currency: str
    is_active: bool


@dataclass(frozen=True, slots=True)
class RequestedLine:
    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class PricedLine:
    product_id: uuid.UUID
    product_name: str
    unit_price: Decimal
    quantity: int
    line_total: Decimal


@dataclass(frozen=True, slots=True)
class PricedOrder:
    lines: tuple[PricedLine, ...]
    total_amount: Decimal
    currency: str


def price_order(
    requested: Sequence[RequestedLine], catalog: Mapping[uuid.UUID, CatalogProduct]
) -> PricedOrder:
    """Price each line at the catalog's current price and total them.

    Raises `ProductUnavailable` (naming every line whose product is unknown or inactive)
    or `MixedCurrencies` when the products are not all priced in one currency."""
    errors: list[dict[str, Any]] = []
    for index, line in enumerate(requested):
        product = catalog.get(line.product_id)
        loc: list[str | int] = ["body", "items", index, "product_id"]
        if product is None:
            errors.append(field_error(loc, "no such product", "product_unknown"))
        elif not product.is_active:
            errors.append(field_error(loc, "the product is no longer sold", "product_inactive"))
    if errors:
        raise ProductUnavailable(errors)

    currencies = sorted({catalog[line.product_id].currency for line in requested})
    if len(currencies) != 1:
        raise MixedCurrencies(currencies)

    lines = []
    for line in requested:
        product = catalog[line.product_id]
        unit_price = product.price.quantize(CENT)
        lines.append(
            PricedLine(
                product_id=product.id,
                product_name=product.name,
                unit_price=unit_price,
                quantity=line.quantity,
                line_total=unit_price * line.quantity,
            )
        )
    total = sum((line.line_total for line in lines), Decimal("0.00"))
    return PricedOrder(lines=tuple(lines), total_amount=total, currency=currencies[0])
