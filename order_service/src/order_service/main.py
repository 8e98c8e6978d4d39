"""The order service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from eventbus import add_events
from order_service.api import cart, order_stream, orders
from order_service.clients import INVENTORY_UPSTREAM, PRODUCT_UPSTREAM, Inventory
from order_service.config import Settings, get_settings
from order_service.payments import SandboxPaymentProvider
from order_service.status_watch import OrderStatusWatch
from order_service.sweeper import Sweeper
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.payments = SandboxPaymentProvider()
        sweeper = Sweeper(
            app.state.database,
            Inventory(app.state.http_client, ttl_seconds=settings.reservation_ttl_seconds),
            app.state.payments,
            settings,
        )
        app.state.sweeper = sweeper
        status_watch = OrderStatusWatch(
            app.state.database, poll_seconds=settings.order_stream_poll_seconds
        )
        app.state.status_watch = status_watch
        await status_watch.start()
        task = asyncio.create_task(sweeper.run_forever(), name="order-sweeper")
        try:
            yield
        finally:
            await status_watch.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    service = ServiceBuilder(
        settings,
        title="Order service",
        description="Orders and the checkout saga: catalog prices, stock reservations, "
        "sandbox payments and idempotent order placement.",
    )
    service.add_tracing()
    service.add_metrics()
    service.add_health()
    service.add_database()
    add_events(service, publishes=True)
    service.add_http_client(
        upstreams={
            PRODUCT_UPSTREAM: settings.product_service_url,
            INVENTORY_UPSTREAM: settings.inventory_service_url,
        }
    )
    service.add_auth()
    service.add_lifespan(lifespan)
    service.add_routers(orders.router, order_stream.router, cart.router)
    return service.build()
