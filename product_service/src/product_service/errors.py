"""The catalog's problem types: what its routes answer when a request cannot be done."""

from __future__ import annotations

from shared.errors import Conflict, ResourceNotFound


class ProductNotFound(ResourceNotFound):
    title = "Product not found"
    type_slug = "product-not-found"
    resource = "product"


class DuplicateSku(Conflict):
    title = "SKU already in use"
    type_slug = "duplicate-sku"

    def __init__(self, sku: str) -> None:
        super().__init__(f"Another product already has SKU {sku!r}.", extra={"sku": sku})
