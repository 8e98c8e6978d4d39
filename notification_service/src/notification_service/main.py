"""The notification service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from eventbus import add_events
from notification_service.api import notifications
from notification_service.config import Settings, get_settings
from notification_service.events import event_handlers
from notification_service.mailer import Mailer
from shared.service import ServiceBuilder


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    mailer = Mailer(settings)  # connects only to send
    service = ServiceBuilder(
        settings,
        title="Notification service",
        description="The notification log: welcome and order e-mails, sent by SMTP when "
        "a server is configured, recorded otherwise.",
    )
    service.add_tracing()
    service.add_metrics()
    service.add_health()
    service.add_database()
    add_events(service, handlers=event_handlers(mailer))
    service.add_http_client()
    service.add_auth()
    service.add_routers(notifications.router)
    app = service.build()
    app.state.mailer = mailer
    return app
