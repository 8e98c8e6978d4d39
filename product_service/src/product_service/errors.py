"""The catalog's problem types: what its routes answer when a request cannot be done."""

from __future__ import annotations

import uuid

from shared.errors import Conflict, NotFound


class ProductNotFound(NotFound):
    title = "Product not found"
    type_slug = "product-not-found"

    def __init__(self, product_id: uuid.UUID) -> None:
        super().__init__(f"There is no product with id {product_id}.")


class DuplicateSku(Conflict):
    title = "SKU already in use"
    type_slug = "duplicate-sku"

    def __init__(self, sku: str) -> None:
        super().__init__(f"Another product already has SKU {sku!r}.", extra={"sku": sku})
