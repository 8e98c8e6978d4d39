"""Stock levels: anyone may read them, administrators set them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from inventory_service.deps import StockServiceDep
from inventory_service.schemas import StockRead, StockUpdate
from shared.auth import AdminClaims
from shared.errors import problem_answers

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])


@router.get("/{product_id}", responses=problem_answers({404: "No stock record for this product"}))
async def get_stock(product_id: uuid.UUID, stock: StockServiceDep) -> StockRead:
    """Units of a product available to order and held for orders in progress."""
    return StockRead.model_validate(await stock.get(product_id))


@router.put(
    "/{product_id}",
    responses={
        status.HTTP_201_CREATED: {"model": StockRead, "description": "Record created"},
        **problem_answers({404: "No such product in the catalog"}),
    },
)
async def set_stock(
    product_id: uuid.UUID,
    data: StockUpdate,
    stock: StockServiceDep,
    response: Response,
    _admin: AdminClaims,
) -> StockRead:
    """Set the units on hand (administrators); the first call for a catalog product
    creates its record (201). Units held or sold for orders are not changed."""
    record, created = await stock.set_available(product_id, data.available)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return StockRead.model_validate(record)
