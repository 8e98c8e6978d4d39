"""The catalog: search and reads for everyone, writes for administrators."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Response, status
from fastapi.routing import APIRoute

from product_service.deps import (
    DatabaseDep,
    OptionalClaims,
    ProductCacheDep,
    ProductFiltersDep,
    ProductServiceDep,
)
from product_service.errors import ProductNotFound
from product_service.schemas import ProductCreate, ProductRead, ProductUpdate
from product_service.service import ProductService, product_document
from shared.auth import AdminClaims
from shared.errors import problem_answers
from shared.schemas import Page, PageDep

router = APIRouter(prefix="/v1/products", tags=["products"])

_SKU_TAKEN = "Another product has this SKU"


@router.get("", response_model=Page[ProductRead])
async def list_products(
    database: DatabaseDep, filters: ProductFiltersDep, page: PageDep
) -> Response:
    """Search the active products: most relevant first with `q`, else newest first."""
    # One statement answers a page (its rows and total): read outside a transaction,
    # it costs one round trip instead of three (BEGIN and ROLLBACK around it), and the
    # page is written as JSON once, not validated again on the way out.
    async with database.reading_alone() as session:
        found = await ProductService(session).search(filters, page)
    return Response(found.model_dump_json().encode(), media_type="application/json")


@router.get(
    "/{product_id}",
    response_model=ProductRead,
    responses=problem_answers({404: "No such product (or, to customers, not on sale)"}),
)
async def get_product(
    product_id: uuid.UUID,
    database: DatabaseDep,
    claims: OptionalClaims,
    cache: ProductCacheDep,
) -> Response:
    """One product; an inactive one only for administrators."""
    include_inactive = claims is not None and claims.is_admin
    if cache.enabled and not include_inactive:
        # The hottest route: a cached document is answered without a session at all, and
        # the readers of one that is missing share one read of it.
        cached = cache.get(product_id) or await cache.fetch(product_id)
        if cached is None:
            raise ProductNotFound(product_id)
    else:
        async with database.reading_alone() as session:
            product = await ProductService(session).get(
                product_id, include_inactive=include_inactive
            )
        document = product_document(product)
        if not product.is_active or (cached := cache.put(product_id, document)) is None:
            # An inactive product (administrators only), or the cache is off: not shared.
            return Response(document, media_type="application/json")
    return Response(
        cached.document,
        media_type="application/json",
        headers={"Cache-Control": cached.cache_control(time.monotonic())},
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_answers({409: _SKU_TAKEN}),
)
async def create_product(
    data: ProductCreate, products: ProductServiceDep, cache: ProductCacheDep, _admin: AdminClaims
) -> ProductRead:
    """Add a product to the catalog (administrators)."""
    product = await products.create(data)
    cache.invalidate(product.id)
    return ProductRead.model_validate(product)


@router.patch("/{product_id}", responses=problem_answers({404: "No such product", 409: _SKU_TAKEN}))
async def update_product(
    product_id: uuid.UUID,
    data: ProductUpdate,
    products: ProductServiceDep,
    cache: ProductCacheDep,
    _admin: AdminClaims,
) -> ProductRead:
    """Change some fields of a product (administrators)."""
    product = await products.update(product_id, data)
    cache.invalidate(product_id)
    return ProductRead.model_validate(product)


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_answers({404: "No such product"}),
)
async def delete_product(
    product_id: uuid.UUID, products: ProductServiceDep, cache: ProductCacheDep, _admin: AdminClaims
) -> None:
    """Deactivate a product: it leaves the catalog but orders keep referring to it."""
    await products.deactivate(product_id)
    cache.invalidate(product_id)


def get_product_route() -> APIRoute:
    """The route of `get_product` (`cached_reads` answers for it from the cache)."""
    return next(
        route
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint is get_product
    )
