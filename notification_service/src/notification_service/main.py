"""The notification service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from notification_service.api import notifications
from notification_service.config import Settings, get_settings
from notification_service.events import event_handlers
from notification_service.mailer import Mailer
from shared.service import create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    mailer = Mailer(settings)  # connects only to send
    app = create_service_app(
        settings,
        title="Notification service",
        description="The notification log: welcome and order e-mails, sent by SMTP when "
        "a server is configured, recorded otherwise.",
        routers=[notifications.router],
        event_handlers=event_handlers(mailer),
    )
    app.state.mailer = mailer
    return app
