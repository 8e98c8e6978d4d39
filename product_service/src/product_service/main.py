"""The product service's app factory (`uvicorn --factory product_service.main:create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from product_service.api import internal, products
from product_service.cache import ProductCache
from product_service.config import Settings, get_settings
from shared.service import create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(
        settings,
        title="Product service",
        description="The catalog: product search and reads for everyone, writes for admins.",
        routers=[products.router, internal.router],
        publishes_events=True,
    )
    app.state.product_cache = ProductCache(settings.product_cache_seconds)
    return app
