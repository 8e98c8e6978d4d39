"""The notification log: each user reads their own, administrators everyone's."""

from __future__ import annotations

from fastapi import APIRouter

from notification_service.deps import NotificationServiceDep
from notification_service.schemas import NotificationRead
from shared.auth import CurrentClaims
from shared.schemas import Page, PageDep

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.get("")
async def list_notifications(
    claims: CurrentClaims, notifications: NotificationServiceDep, page: PageDep
) -> Page[NotificationRead]:
    """Your notifications, newest first (everyone's for administrators)."""
    return await notifications.page(claims, page)
