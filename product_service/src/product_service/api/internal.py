"""Service-to-service routes; the gateway never routes /internal."""

from __future__ import annotations

from fastapi import APIRouter

from product_service.deps import ProductServiceDep
from product_service.schemas import ProductBatch, ProductRead
from shared.schemas import BatchIds
from shared.service_auth import require_service

# Checkout prices orders (and the cart shows them) from it; inventory checks a product
# exists before stocking it.
router = APIRouter(
    prefix="/internal/v1",
    tags=["internal"],
    dependencies=[require_service("order_service", "inventory_service")],
)


@router.get("/products")
async def read_products_by_id(
    ids: BatchIds,
    products: ProductServiceDep,
) -> ProductBatch:
    """Products by id, active or not, in the order asked (unknown ids are left out)."""
    items = await products.get_many(ids)
    return ProductBatch(items=[ProductRead.model_validate(item) for item in items])
