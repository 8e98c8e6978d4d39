"""Request and response models of the notification service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, HttpUrl, UrlConstraints

from notification_service.models import DeliveryStatus, NotificationKind, NotificationStatus
from shared.schemas import PartialUpdate, RequestModel, ResponseModel, SingleLineText


class NotificationRead(ResponseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    kind: NotificationKind
    subject: str
    body: str
    status: NotificationStatus
    order_id: uuid.UUID | None
    created_at: datetime


#: What a webhook may subscribe to: every type of the contract's event list
#: (`eventbus.types.EVENT_TYPES`, which a test keeps equal to this).
WebhookEventType = Literal[
    "user.registered",
    "product.created",
    "product.updated",
    "order.created",
    "order.confirmed",
    "order.cancelled",
    "order.shipped",
    "order.delivered",
    "order.refunded",
]
WebhookUrl = Annotated[
    HttpUrl,
    UrlConstraints(max_length=2048, allowed_schemes=["http", "https"]),
    Field(examples=["https://erp.example.com/hooks/shop"]),
]
WebhookEvents = Annotated[list[WebhookEventType], Field(min_length=1, max_length=20)]
WebhookDescription = Annotated[SingleLineText, Field(max_length=500)]


class WebhookCreate(RequestModel):
    url: WebhookUrl
    events: WebhookEvents
    description: WebhookDescription = ""


class WebhookUpdate(PartialUpdate):
    """Only the fields sent change; none of them may be null."""

    url: WebhookUrl | None = None
    events: WebhookEvents | None = None
    description: WebhookDescription | None = None
    is_active: bool | None = None


class WebhookRead(ResponseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str
    is_active: bool
    created_at: datetime


class WebhookCreated(WebhookRead):
    #: The signing secret: in this answer only, never again.
    secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class DeliveryRead(ResponseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    response_status: int | None
    error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
