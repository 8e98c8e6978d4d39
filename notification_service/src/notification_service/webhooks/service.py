"""The webhook use cases: managing endpoints (the routes) and owing each subscribed
endpoint a delivery of an event (the event handlers)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import EventEnvelope
from notification_service.errors import DeliveryNotFound, ForbiddenWebhookUrl, WebhookNotFound
from notification_service.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from notification_service.schemas import (
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from notification_service.webhooks.repository import DeliveryRepository, EndpointRepository
from notification_service.webhooks.signing_secrets import SecretBox, new_secret
from notification_service.webhooks.url_guard import ForbiddenHost, dns_resolver, resolve_public
from shared.db import utcnow
from shared.schemas import Page, PageParams

logger = logging.getLogger(__name__)


class WebhookService:
    def __init__(
        self,
        session: AsyncSession,
        *,
        secret_box: SecretBox,
        block_private_hosts: bool,
        retry_window: timedelta,
    ) -> None:
        self.session = session
        self.secret_box = secret_box
        self.block_private_hosts = block_private_hosts
        self.retry_window = retry_window
        self.endpoints = EndpointRepository(session)
        self.deliveries = DeliveryRepository(session)

    async def create(self, data: WebhookCreate) -> WebhookCreated:
        """Register an endpoint; its secret is in this answer and nowhere else."""
        url = str(data.url)
        await self._check_url(url)
        secret = new_secret()
        endpoint = WebhookEndpoint(
            url=url,
            events=list(dict.fromkeys(data.events)),
            description=data.description,
            is_active=True,
            secret_encrypted=self.secret_box.encrypt(secret),
        )
        await self.endpoints.add(endpoint)
        await self.session.commit()
        logger.info(
            "webhook endpoint registered",
            extra={"webhook_id": str(endpoint.id), "events": endpoint.events},
        )
        return WebhookCreated(**WebhookRead.model_validate(endpoint).model_dump(), secret=secret)

    async def page(self, page: PageParams) -> Page[WebhookRead]:
        return (await self.endpoints.page(page)).to_page(WebhookRead, page.limit)

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        endpoint = await self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise WebhookNotFound(endpoint_id)
        return endpoint

    async def update(self, endpoint_id: uuid.UUID, data: WebhookUpdate) -> WebhookEndpoint:
        endpoint = await self.get(endpoint_id)
        if data.url is not None:
            url = str(data.url)
            await self._check_url(url)
            endpoint.url = url
        if data.events is not None:
            endpoint.events = list(dict.fromkeys(data.events))
        if data.description is not None:
            endpoint.description = data.description
        if data.is_active is not None:
            endpoint.is_active = data.is_active
        await self.session.commit()
        return endpoint

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        """Remove the endpoint and its deliveries (nothing more is sent to it)."""
        await self.endpoints.delete(await self.get(endpoint_id))
        await self.session.commit()

    async def deliveries_page(self, endpoint_id: uuid.UUID, page: PageParams) -> Page[DeliveryRead]:
        await self.get(endpoint_id)
        return (await self.deliveries.page(endpoint_id, page)).to_page(DeliveryRead, page.limit)

    async def retry(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryRead:
        """Make the delivery due now, whatever its status (a replay of a delivered one
        included), with a fresh retry window."""
        await self.get(endpoint_id)
        delivery = await self.deliveries.retry_now(
            endpoint_id, delivery_id, now=utcnow(), window=self.retry_window
        )
        if delivery is None:
            raise DeliveryNotFound(delivery_id)
        await self.session.commit()
        return DeliveryRead.model_validate(delivery)

    async def _check_url(self, url: str) -> None:
        if not self.block_private_hosts:
            return
        try:
            async with dns_resolver() as resolver:
                await resolve_public(url, resolver)
        except ForbiddenHost as error:
            raise ForbiddenWebhookUrl(
                f"The URL's host is not allowed: {error}.",
                extra={"errors": [{"loc": ["body", "url"], "msg": str(error), "type": "url"}]},
            ) from None


async def owe_deliveries(
    session: AsyncSession, event: EventEnvelope, *, retry_window: timedelta
) -> int:
    """Write a pending delivery of `event` for each active endpoint subscribed to its
    type, in the caller's transaction (the consumer's, with the event's inbox row: the
    event is owed to the endpoints exactly when it counts as processed)."""
    endpoints = await EndpointRepository(session).subscribed_to(event.type)
    if not endpoints:
        return 0
    now = utcnow()
    payload = event.to_json()
    await DeliveryRepository(session).add_all(
        [
            WebhookDelivery(
                endpoint_id=endpoint_id,
                event_id=event.id,
                event_type=event.type,
                payload=payload,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                retry_until=now + retry_window,
                created_at=now,
            )
            for endpoint_id in endpoints
        ]
    )
    return len(endpoints)
