"""SQL of webhook endpoints and deliveries, the worker's claims included."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from notification_service.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from shared.paging import PageResult, SortKey, fetch_page
from shared.schemas import PageParams

#: `session.info` key of the active endpoints read in that session (`subscribed_to`).
_ACTIVE_ENDPOINTS = "webhooks.active_endpoints"


#: The active endpoints and the events they take (built once: every event asks).
_SELECT_ACTIVE = select(WebhookEndpoint.id, WebhookEndpoint.events).where(
    WebhookEndpoint.is_active.is_(True)
)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery a worker holds the lease of, with what it needs to send it."""

    id: uuid.UUID
    lease_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    payload: str
    attempts: int
    retry_until: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt changes on its delivery."""

    status: DeliveryStatus
    response_status: int | None
    error: str | None
    duration_ms: int
    next_attempt_at: datetime | None


class EndpointRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, endpoint: WebhookEndpoint) -> None:
        self.session.add(endpoint)
        await self.session.flush()

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        return await self.session.get(WebhookEndpoint, endpoint_id)

    async def get_many(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, WebhookEndpoint]:
        rows = await self.session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids))
        )
        return {row.id: row for row in rows}

    async def page(self, page: PageParams) -> PageResult[WebhookEndpoint]:
        """One page of the endpoints, newest first."""
        return await fetch_page(
            self.session,
            select(WebhookEndpoint),
            order_by=(SortKey(WebhookEndpoint.created_at), SortKey(WebhookEndpoint.id)),
            page=page,
        )

    async def subscribed_to(self, event_type: str) -> list[uuid.UUID]:
        """The ids of the active endpoints that take `event_type`. A shop has a handful of
        endpoints: reading them all and filtering here is cheaper than a JSON query per
        backend, and they are read once per session: the consumer's session is one batch
        of events, each of which asked again before."""
        active: list[tuple[uuid.UUID, frozenset[str]]] | None = self.session.info.get(
            _ACTIVE_ENDPOINTS
        )
        if active is None:
            rows = await self.session.execute(_SELECT_ACTIVE)
            active = [(row.id, frozenset(row.events)) for row in rows]
            self.session.info[_ACTIVE_ENDPOINTS] = active
        return [endpoint_id for endpoint_id, events in active if event_type in events]

    async def delete(self, endpoint: WebhookEndpoint) -> None:
        await self.session.delete(endpoint)
        await self.session.flush()


class DeliveryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_all(self, deliveries: Sequence[WebhookDelivery]) -> None:
        self.session.add_all(deliveries)
        await self.session.flush()

    async def page(self, endpoint_id: uuid.UUID, page: PageParams) -> PageResult[WebhookDelivery]:
        """One page of an endpoint's deliveries, newest first: a busy endpoint collects
        one per event for as long as it is registered, so its log pages by keyset."""
        return await fetch_page(
            self.session,
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id),
            # Ids break ties between deliveries owed in the same instant.
            order_by=(SortKey(WebhookDelivery.created_at), SortKey(WebhookDelivery.id)),
            page=page,
            scope=str(endpoint_id),
        )

    async def retry_now(
        self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, *, now: datetime, window: timedelta
    ) -> WebhookDelivery | None:
        """Make a delivery due at once, with a fresh retry window; None if it is not the
        endpoint's. One being sent right now keeps its lease (never sent twice at once)."""
        statement = (
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
            .values(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                retry_until=now + window,
                updated_at=now,
            )
            .returning(WebhookDelivery)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def claim(
        self,
        *,
        now: datetime,
        limit: int,
        lease: timedelta,
        skip_endpoints: Collection[uuid.UUID],
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries of active endpoints (oldest due first).

        One statement on both backends: on PostgreSQL the rows are picked `FOR UPDATE
        SKIP LOCKED`, so replicas claiming together take different rows without waiting
        for each other; SQLite runs the statement under its single write lock, so the
        second claimer sees the first one's lease. A lease that ran out (its worker died)
        makes the delivery claimable again: at least once, never twice at once."""
        lease_id = uuid.uuid4()
        due = (
            select(WebhookDelivery.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
                WebhookEndpoint.is_active.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
        if skip_endpoints:
            due = due.where(WebhookDelivery.endpoint_id.not_in(skip_endpoints))
        statement = (
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(due.scalar_subquery()))
            .values(locked_until=now + lease, lease_id=lease_id)
            .returning(
                WebhookDelivery.id,
                WebhookDelivery.endpoint_id,
                WebhookDelivery.event_id,
                WebhookDelivery.event_type,
                WebhookDelivery.payload,
                WebhookDelivery.attempts,
                WebhookDelivery.retry_until,
                WebhookDelivery.created_at,
            )
        )
        rows = (await self.session.execute(statement)).all()
        return [
            ClaimedDelivery(
                id=row.id,
                lease_id=lease_id,
                endpoint_id=row.endpoint_id,
                event_id=row.event_id,
                event_type=row.event_type,
                payload=row.payload,
                attempts=row.attempts,
                retry_until=row.retry_until,
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def release(self, deliveries: Collection[ClaimedDelivery]) -> None:
        """Give leases back unused (due again at once, for this or another worker)."""
        for delivery in deliveries:
            await self.session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.lease_id == delivery.lease_id,
                )
                .values(locked_until=None, lease_id=None)
            )

    async def record(self, delivery: ClaimedDelivery, outcome: Outcome, *, now: datetime) -> bool:
        """Store an attempt and its effect on the delivery; False (nothing stored) when
        the lease was lost meanwhile (another worker owns the delivery now)."""
        statement = (
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                WebhookDelivery.lease_id == delivery.lease_id,
            )
            .values(
                attempts=WebhookDelivery.attempts + 1,
                status=outcome.status,
                response_status=outcome.response_status,
                error=outcome.error,
                next_attempt_at=outcome.next_attempt_at,
                locked_until=None,
                lease_id=None,
                updated_at=now,
            )
            .returning(WebhookDelivery.id)
        )
        if (await self.session.execute(statement)).scalar_one_or_none() is None:
            return False
        self.session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                response_status=outcome.response_status,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
                attempted_at=now,
            )
        )
        await self.session.flush()
        return True

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and since when the oldest is."""
        row = (
            await self.session.execute(
                select(func.count(), func.min(WebhookDelivery.created_at)).where(
                    WebhookDelivery.status == DeliveryStatus.PENDING
                )
            )
        ).one()
        return int(row[0]), row[1]
