"""Annotated dependency aliases of the notification service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from notification_service.service import NotificationService
from shared.service import SessionDep


async def get_notification_service(session: SessionDep) -> NotificationService:
    return NotificationService(session)


NotificationServiceDep = Annotated[NotificationService, Depends(get_notification_service)]
