"""Service-to-service routes; the gateway never routes /internal."""

from __future__ import annotations

from fastapi import APIRouter, Response

from product_service.deps import DatabaseDep
from product_service.schemas import ProductBatch
from product_service.service import ProductService
from shared.schemas import BatchIds
from shared.service_auth import require_service

# Checkout prices orders (and the cart shows them) from it; inventory checks a product
# exists before stocking it.
router = APIRouter(
    prefix="/internal/v1",
    tags=["internal"],
    dependencies=[require_service("order_service", "inventory_service")],
)


@router.get("/products", response_model=ProductBatch)
async def read_products_by_id(ids: BatchIds, database: DatabaseDep) -> Response:
    """Products by id, active or not, in the order asked (unknown ids are left out)."""
    # Every checkout asks this once: one statement outside a transaction (one round
    # trip, not three), written as JSON once rather than validated again on the way out.
    async with database.reading_alone() as session:
        items = await ProductService(session).get_many(ids)
    batch = ProductBatch(items=items)
    return Response(batch.model_dump_json().encode(), media_type="application/json")
