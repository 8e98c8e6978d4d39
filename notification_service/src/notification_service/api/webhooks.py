"""Webhook endpoints and their deliveries: administrators only."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from notification_service.deps import DeliveriesDueDep, WebhookServiceDep
from notification_service.schemas import (
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from shared.auth import AdminClaims
from shared.errors import problem_answers
from shared.schemas import Page, PageDep

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_NO_ENDPOINT = "No such webhook endpoint"


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_webhook(
    data: WebhookCreate, webhooks: WebhookServiceDep, _admin: AdminClaims
) -> WebhookCreated:
    """Register an endpoint for some event types; the answer holds its signing secret,
    which is never shown again."""
    return await webhooks.create(data)


@router.get("")
async def list_webhooks(
    webhooks: WebhookServiceDep, page: PageDep, _admin: AdminClaims
) -> Page[WebhookRead]:
    """The registered endpoints, newest first."""
    return await webhooks.page(page)


@router.get("/{webhook_id}", responses=problem_answers({404: _NO_ENDPOINT}))
async def get_webhook(
    webhook_id: uuid.UUID, webhooks: WebhookServiceDep, _admin: AdminClaims
) -> WebhookRead:
    """One endpoint (without its secret)."""
    return WebhookRead.model_validate(await webhooks.get(webhook_id))


@router.patch("/{webhook_id}", responses=problem_answers({404: _NO_ENDPOINT}))
async def update_webhook(
    webhook_id: uuid.UUID, data: WebhookUpdate, webhooks: WebhookServiceDep, _admin: AdminClaims
) -> WebhookRead:
    """Change an endpoint's URL, events, description or whether it is active (an
    inactive endpoint is owed no new events)."""
    return WebhookRead.model_validate(await webhooks.update(webhook_id, data))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_answers({404: _NO_ENDPOINT}),
)
async def delete_webhook(
    webhook_id: uuid.UUID, webhooks: WebhookServiceDep, _admin: AdminClaims
) -> Response:
    """Remove an endpoint and its delivery log."""
    await webhooks.delete(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", responses=problem_answers({404: _NO_ENDPOINT}))
async def list_deliveries(
    webhook_id: uuid.UUID, webhooks: WebhookServiceDep, page: PageDep, _admin: AdminClaims
) -> Page[DeliveryRead]:
    """The endpoint's deliveries, newest first."""
    return await webhooks.deliveries_page(webhook_id, page)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_answers({404: "No such webhook endpoint, or no such delivery of it"}),
)
async def retry_delivery(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    webhooks: WebhookServiceDep,
    deliveries_due: DeliveriesDueDep,
    _admin: AdminClaims,
) -> DeliveryRead:
    """Send a delivery again at once (a failed one, or a replay of a delivered one)."""
    delivery = await webhooks.retry(webhook_id, delivery_id)
    deliveries_due.set()
    return delivery
