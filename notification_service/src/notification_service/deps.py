"""Annotated dependency aliases of the notification service."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import Depends

from notification_service.config import Settings
from notification_service.service import NotificationService
from notification_service.webhooks.service import WebhookService
from notification_service.webhooks.signing_secrets import SecretBox
from shared.service import SessionDep, app_settings, from_state

SettingsDep = Annotated[Settings, Depends(app_settings)]


async def get_notification_service(session: SessionDep) -> NotificationService:
    return NotificationService(session)


#: Seals the endpoints' signing secrets; made in the lifespan.
get_secret_box = from_state("webhook_secret_box")
#: Set it to have the delivery worker look for due deliveries now.
get_deliveries_due = from_state("webhook_deliveries_due")
SecretBoxDep = Annotated[SecretBox, Depends(get_secret_box)]
DeliveriesDueDep = Annotated[asyncio.Event, Depends(get_deliveries_due)]


async def get_webhook_service(
    session: SessionDep, settings: SettingsDep, secret_box: SecretBoxDep
) -> WebhookService:
    return WebhookService(
        session,
        secret_box=secret_box,
        block_private_hosts=settings.blocks_private_webhook_hosts,
        retry_window=timedelta(hours=settings.webhook_retry_hours),
    )


NotificationServiceDep = Annotated[NotificationService, Depends(get_notification_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]
