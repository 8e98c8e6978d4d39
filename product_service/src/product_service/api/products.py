"""The catalog: search and reads for everyone, writes for administrators."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from product_service.deps import OptionalClaims, ProductFiltersDep, ProductServiceDep
from product_service.schemas import ProductCreate, ProductRead, ProductUpdate
from shared.auth import AdminClaims
from shared.schemas import Page, PageDep

router = APIRouter(prefix="/v1/products", tags=["products"])


@router.get("")
async def list_products(
    products: ProductServiceDep, filters: ProductFiltersDep, page: PageDep
) -> Page[ProductRead]:
    """Search the active products, newest first."""
    return await products.search(filters, page)


@router.get("/{product_id}")
async def get_product(
    product_id: uuid.UUID, products: ProductServiceDep, claims: OptionalClaims
) -> ProductRead:
    """One product; an inactive one only for administrators."""
    include_inactive = claims is not None and claims.is_admin
    product = await products.get(product_id, include_inactive=include_inactive)
    return ProductRead.model_validate(product)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_product(
    data: ProductCreate, products: ProductServiceDep, _admin: AdminClaims
) -> ProductRead:
    """Add a product to the catalog (administrators)."""
    return ProductRead.model_validate(await products.create(data))


@router.patch("/{product_id}")
async def update_product(
    product_id: uuid.UUID, data: ProductUpdate, products: ProductServiceDep, _admin: AdminClaims
) -> ProductRead:
    """Change some fields of a product (administrators)."""
    return ProductRead.model_validate(await products.update(product_id, data))


@router.delete("/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_product(
    product_id: uuid.UUID, products: ProductServiceDep, _admin: AdminClaims
) -> None:
    """Deactivate a product: it leaves the catalog but orders keep referring to it."""
    await products.deactivate(product_id)
