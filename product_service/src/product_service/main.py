"""The product service's app factory (`uvicorn --factory product_service.main:create_app`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from eventbus import add_events
from product_service.api import internal, products
from product_service.cache import ProductCache
from product_service.cached_reads import CachedProductReads
from product_service.config import Settings, get_settings
from product_service.service import ProductService
from shared.db import Database
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = ServiceBuilder(
        settings,
        title="Product service",
        description="The catalog: product search and reads for everyone, writes for admins.",
    )
    service.add_service_defaults()
    service.add_database()
    add_events(service, publishes=True)
    service.add_http_client()
    service.add_auth()
    service.add_routers(products.router, internal.router)
    cache = ProductCache(settings.product_cache_seconds)
    service.add_lifespan(refreshing(cache))
    service.add_middleware(CachedProductReads, cache=cache, route=products.get_product_route())
    app = service.build()
    app.state.product_cache = cache
    return app


def refreshing(cache: ProductCache) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan part that lets the cache read documents from the database."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database: Database = app.state.database

        async def load(product_id: uuid.UUID) -> bytes | None:
            async with database.reading_alone() as session:
                return await ProductService(session).public_document(product_id)

        cache.load_with(load)
        try:
            yield
        finally:
            await cache.aclose()

    return lifespan
