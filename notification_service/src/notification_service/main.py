"""The notification service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from eventbus import add_events
from notification_service.api import notifications, webhooks
from notification_service.config import Settings, get_settings
from notification_service.events import event_handlers
from notification_service.mailer import Mailer
from notification_service.webhooks.sender import WebhookSender
from notification_service.webhooks.signing_secrets import SecretBox
from notification_service.webhooks.worker import DeliveryWorker
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    mailer = Mailer(settings)  # connects only to send
    secret_box = SecretBox(settings.webhook_keys())
    #: Set when deliveries become due (after an event's commit, a manual retry).
    deliveries_due = asyncio.Event()
    retry_window = timedelta(hours=settings.webhook_retry_hours)

    @asynccontextmanager
    async def run_delivery_worker(app: FastAPI) -> AsyncIterator[None]:
        sender = WebhookSender(
            timeout_seconds=settings.webhook_timeout_seconds,
            block_private_hosts=settings.blocks_private_webhook_hosts,
            max_connections=settings.webhook_concurrency,
        )
        worker = DeliveryWorker(
            app.state.database,
            sender,
            secret_box,
            deliveries_due=deliveries_due,
            concurrency=settings.webhook_concurrency,
            endpoint_concurrency=settings.webhook_endpoint_concurrency,
            poll_seconds=settings.webhook_poll_seconds,
            retry_base_seconds=settings.webhook_retry_base_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
        )
        app.state.webhook_worker = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()
            await sender.aclose()

    service = ServiceBuilder(
        settings,
        title="Notification service",
        description="The notification log (welcome and order e-mails, sent by SMTP when "
        "a server is configured, recorded otherwise) and signed, retried webhooks.",
    )
    service.add_service_defaults()
    service.add_database()
    add_events(
        service,
        handlers=event_handlers(mailer, deliveries_due=deliveries_due, retry_window=retry_window),
    )
    service.add_http_client()
    service.add_auth()
    service.add_lifespan(run_delivery_worker)
    service.add_routers(notifications.router, webhooks.router)
    app = service.build()
    app.state.mailer = mailer
    app.state.webhook_secret_box = secret_box
    app.state.webhook_deliveries_due = deliveries_due
    return app
