"""The order service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from eventbus import add_events
from order_service.api import cart, order_stream, orders
from order_service.checkout import CheckoutLimit, Compensator
from order_service.config import Settings, get_settings
from order_service.inventory_client import INVENTORY_UPSTREAM, InventoryClient
from order_service.payments import SandboxPaymentProvider
from order_service.product_client import PRODUCT_UPSTREAM
from order_service.status_watch import OrderStatusWatch
from order_service.sweeper import Sweeper
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def payments_lifespan(app: FastAPI) -> AsyncIterator[None]:
        """The payment provider, the one Compensator that gives stock and payment back
        for the checkout, cancellations and the sweep, and the limit on checkouts."""
        payments = SandboxPaymentProvider()
        inventory = InventoryClient(
            app.state.http_client, ttl_seconds=settings.reservation_ttl_seconds
        )
        app.state.payments = payments
        app.state.compensator = Compensator(inventory, payments)
        app.state.checkout_limit = CheckoutLimit(settings.checkout_concurrency)
        yield

    @asynccontextmanager
    async def status_watch_lifespan(app: FastAPI) -> AsyncIterator[None]:
        """One poller of order statuses for every open order stream of this process."""
        status_watch = OrderStatusWatch(
            app.state.database, poll_seconds=settings.order_stream_poll_seconds
        )
        app.state.status_watch = status_watch
        await status_watch.start()
        try:
            yield
        finally:
            await status_watch.stop()

    def make_sweeper(app: FastAPI) -> Sweeper:
        return Sweeper(app.state.database, app.state.compensator, settings)

    service = ServiceBuilder(
        settings,
        title="Order service",
        description="Orders and the checkout saga: catalog prices, stock reservations, "
        "sandbox payments and idempotent order placement.",
    )
    service.add_service_defaults()
    service.add_database()
    add_events(service, publishes=True)
    service.add_http_client(
        upstreams={
            PRODUCT_UPSTREAM: settings.product_service_url,
            INVENTORY_UPSTREAM: settings.inventory_service_url,
        }
    )
    service.add_auth()
    service.add_lifespan(payments_lifespan)
    service.add_lifespan(status_watch_lifespan)
    service.add_sweeper(make_sweeper, name="sweeper", interval_seconds=settings.order_sweep_seconds)
    service.add_routers(orders.router, order_stream.router, cart.router)
    return service.build()
