"""The inventory service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from eventbus import add_events
from inventory_service.api import internal, inventory
from inventory_service.config import Settings, get_settings
from inventory_service.events import handlers
from inventory_service.product_client import PRODUCT_UPSTREAM
from inventory_service.sweeper import Sweeper
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def make_sweeper(app: FastAPI) -> Sweeper:
        return Sweeper(app.state.database, batch_size=settings.reservation_sweep_batch_size)

    service = ServiceBuilder(
        settings,
        title="Inventory service",
        description="Stock levels for everyone to read and admins to set, and the "
        "reservations that hold stock for orders (internal API for order_service).",
    )
    service.add_service_defaults()
    service.add_database()
    add_events(service, handlers=handlers)
    service.add_http_client(upstreams={PRODUCT_UPSTREAM: settings.product_service_url})
    service.add_auth()
    service.add_sweeper(
        make_sweeper, name="sweeper", interval_seconds=settings.reservation_sweep_seconds
    )
    service.add_routers(inventory.router, internal.router, internal.stock_levels)
    return service.build()
