"""The product service's app factory (`uvicorn --factory product_service.main:create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from eventbus import add_events
from product_service.api import internal, products
from product_service.cache import ProductCache
from product_service.cached_reads import CachedProductReads
from product_service.config import Settings, get_settings
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
    service.add_middleware(CachedProductReads, cache=cache, route=products.get_product_route())
    app = service.build()
    app.state.product_cache = cache
    return app
