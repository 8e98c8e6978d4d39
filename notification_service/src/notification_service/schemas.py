"""Response models of the notification service."""

from __future__ import annotations

import uuid
from datetime import datetime

from notification_service.models import NotificationKind, NotificationStatus
from shared.schemas import ResponseModel


class NotificationRead(ResponseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    kind: NotificationKind
    subject: str
    body: str
    status: NotificationStatus
    order_id: uuid.UUID | None
    created_at: datetime
