"""The inventory service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from eventbus import add_events
from inventory_service.api import internal, stock
from inventory_service.catalog import PRODUCT_UPSTREAM
from inventory_service.config import Settings, get_settings
from inventory_service.events import handlers
from inventory_service.expiry import sweep_expired_reservations
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(
            sweep_expired_reservations(
                app.state.database,
                interval_seconds=settings.reservation_sweep_seconds,
                batch_size=settings.reservation_sweep_batch_size,
            ),
            name="reservation-expiry-sweeper",
        )
        app.state.expiry_sweeper = sweeper
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    service = ServiceBuilder(
        settings,
        title="Inventory service",
        description="Stock levels for everyone to read and admins to set, and the "
        "reservations that hold stock for orders (internal API for order_service).",
    )
    service.add_tracing()
    service.add_metrics()
    service.add_health()
    service.add_database()
    add_events(service, handlers=handlers)
    service.add_http_client(upstreams={PRODUCT_UPSTREAM: settings.product_service_url})
    service.add_auth()
    service.add_lifespan(lifespan)
    service.add_routers(stock.router, internal.router, internal.stock_levels)
    return service.build()
