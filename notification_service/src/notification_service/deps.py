"""Annotated dependency aliases of the notification service."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from notification_service.config import Settings
from notification_service.service import NotificationService
from notification_service.webhooks.service import WebhookService
from shared.service import SessionDep, app_settings

SettingsDep = Annotated[Settings, Depends(app_settings)]


async def get_notification_service(session: SessionDep) -> NotificationService:
    return NotificationService(session)


async def get_webhook_service(
    session: SessionDep, settings: SettingsDep, request: Request
) -> WebhookService:
    return WebhookService(
        session,
        secret_box=request.app.state.webhook_secret_box,
        block_private_hosts=settings.blocks_private_webhook_hosts,
        retry_window=timedelta(hours=settings.webhook_retry_hours),
    )


async def get_deliveries_due(request: Request) -> asyncio.Event:
    """Set it to have the delivery worker look for due deliveries now."""
    event: asyncio.Event = request.app.state.webhook_deliveries_due
    return event


NotificationServiceDep = Annotated[NotificationService, Depends(get_notification_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]
DeliveriesDueDep = Annotated[asyncio.Event, Depends(get_deliveries_due)]
