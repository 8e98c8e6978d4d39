"""SQL of orders and idempotency keys.

Status changes are conditional UPDATEs (`WHERE status IN (...)`) and a key is claimed by
an INSERT that a primary key settles, so races are decided by the database, never by a
read in Python followed by a write."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    delete,
    inspect,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from order_service.domain.pricing import PricedOrder
from order_service.domain.states import (
    TIMELINE_EVENT_OF_STATUS,
    CancelReason,
    OrderStatus,
    TimelineEvent,
)
from order_service.models import (
    IdempotencyKey,
    IdempotencyState,
    OrderLine,
    OrderTimelineEntry,
    PurchaseOrder,
)
from shared.db import utcnow
from shared.paging import PageResult, SortKey, fetch_page
from shared.schemas import PageParams


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, order_id: uuid.UUID) -> PurchaseOrder | None:
        return await self.session.get(
            PurchaseOrder,
            order_id,
            options=[selectinload(PurchaseOrder.lines)],
            populate_existing=True,
        )

    async def add(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        priced: PricedOrder,
        shipping_address: dict[str, Any] | None = None,
    ) -> PurchaseOrder:
        """Insert a `pending` order with its lines and its `created` timeline entry
        (flushed, not committed)."""
        now = utcnow()
        order = PurchaseOrder(
            id=order_id,
            user_id=user_id,
            status=OrderStatus.PENDING,
            cancel_reason=None,
            total_amount=priced.total_amount,
            currency=priced.currency,
            shipping_address=shipping_address,
            created_at=now,
            updated_at=now,
            lines=[
                OrderLine(
                    product_id=line.product_id,
                    position=position,
                    product_name=line.product_name,
                    unit_price=line.unit_price,
                    quantity=line.quantity,
                    line_total=line.line_total,
                )
                for position, line in enumerate(priced.lines)
            ],
        )
        self.session.add(order)
        self.add_timeline_entry(order, TimelineEvent.CREATED, at=now)
        await self.session.flush()
        return order

    def add_timeline_entry(
        self,
        order: PurchaseOrder,
        event: TimelineEvent,
        *,
        at: datetime,
        detail: str | None = None,
    ) -> None:
        """Record `event` with the order's current status; flushed with the change."""
        self.session.add(
            OrderTimelineEntry(
                order_id=order.id, event=event, status=order.status, detail=detail, at=at
            )
        )

    async def timeline(self, order_id: uuid.UUID) -> Sequence[OrderTimelineEntry]:
        """The order's timeline, oldest first."""
        statement = (
            select(OrderTimelineEntry)
            .where(OrderTimelineEntry.order_id == order_id)
            .order_by(OrderTimelineEntry.id)
        )
        return (await self.session.scalars(statement)).all()

    async def transition(
        self,
        order_id: uuid.UUID,
        *,
        to: OrderStatus,
        sources: Collection[OrderStatus],
        cancel_reason: CancelReason | None = None,
        **values: Any,
    ) -> PurchaseOrder | None:
        """Move the order to `to` if it is in one of `sources`, recording it on the
        timeline in the same transaction; the order as it is now (lines loaded), or None
        when it was in another status (or does not exist)."""
        now = utcnow()
        statement = (
            update(PurchaseOrder)
            .where(PurchaseOrder.id == order_id, PurchaseOrder.status.in_(sources))
            .values(status=to, cancel_reason=cancel_reason, updated_at=now, **values)
            .returning(PurchaseOrder)
            .execution_options(populate_existing=True)
        )
        order = (await self.session.scalars(statement)).one_or_none()
        if order is None:
            return None
        self.add_timeline_entry(
            order,
            TIMELINE_EVENT_OF_STATUS[to],
            at=now,
            detail=cancel_reason.value if cancel_reason is not None else None,
        )
        if "lines" in inspect(order).unloaded:
            # Lines never change: the ones loaded with the order before are still right.
            await self.session.refresh(order, ["lines"])
        return order

    async def set_values(self, order_id: uuid.UUID, **values: Any) -> None:
        """Change bookkeeping columns (not the status, not `updated_at`)."""
        await self.session.execute(
            update(PurchaseOrder)
            .where(PurchaseOrder.id == order_id)
            .values(**values, updated_at=PurchaseOrder.updated_at)
        )

    async def page(
        self, *, user_id: uuid.UUID | None, status: OrderStatus | None, page: PageParams
    ) -> PageResult[PurchaseOrder]:
        """One page of orders (one user's, or everyone's), newest first."""
        conditions: list[ColumnElement[bool]] = []
        if user_id is not None:
            conditions.append(PurchaseOrder.user_id == user_id)
        if status is not None:
            conditions.append(PurchaseOrder.status == status)
        statement = (
            select(PurchaseOrder).where(*conditions).options(selectinload(PurchaseOrder.lines))
        )
        return await fetch_page(
            self.session,
            statement,
            # Ids break ties between orders placed in the same instant: pages never overlap.
            order_by=(SortKey(PurchaseOrder.created_at), SortKey(PurchaseOrder.id)),
            page=page,
            scope=repr((user_id, status)),
        )

    async def pending_before(self, cutoff: datetime, limit: int) -> Sequence[uuid.UUID]:
        """Orders still `pending` that were placed before `cutoff`, oldest first."""
        statement = (
            select(PurchaseOrder.id)
            # A literal so the partial index on `status = 'pending'` can serve the query.
            .where(
                PurchaseOrder.status == literal_column(f"'{OrderStatus.PENDING.value}'"),
                PurchaseOrder.created_at < cutoff,
            )
            .order_by(PurchaseOrder.created_at)
            .limit(limit)
        )
        return (await self.session.scalars(statement)).all()

    async def awaiting_compensation(self, before: datetime, limit: int) -> Sequence[uuid.UUID]:
        """Cancelled orders whose stock or payment was not given back yet, last changed
        before `before` (so a request that is still compensating is left to finish)."""
        statement = (
            select(PurchaseOrder.id)
            .where(PurchaseOrder.compensation_pending, PurchaseOrder.updated_at < before)
            .order_by(PurchaseOrder.updated_at)
            .limit(limit)
        )
        return (await self.session.scalars(statement)).all()


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, user_id: uuid.UUID, key: str, fingerprint: str, order_id: uuid.UUID
    ) -> bool:
        """Insert the key `in_progress`; False when the user already has this key.

        `ON CONFLICT DO NOTHING` on the primary key: of concurrent claims exactly one
        inserts, whatever the timing, and the others do not raise."""
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        now = utcnow()
        statement = (
            insert(IdempotencyKey)
            .values(
                user_id=user_id,
                key=key,
                request_fingerprint=fingerprint,
                state=IdempotencyState.IN_PROGRESS,
                order_id=order_id,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[IdempotencyKey.user_id, IdempotencyKey.key])
            .returning(IdempotencyKey.key)
        )
        return (await self.session.scalars(statement)).one_or_none() is not None

    async def get(self, user_id: uuid.UUID, key: str) -> IdempotencyKey | None:
        return await self.session.get(IdempotencyKey, (user_id, key), populate_existing=True)

    async def complete(
        self, user_id: uuid.UUID, key: str, order_id: uuid.UUID, status: int, body: Any
    ) -> None:
        """Store the answer of the claim that created `order_id`."""
        await self.session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.key == key,
                IdempotencyKey.order_id == order_id,
            )
            .values(
                state=IdempotencyState.COMPLETED,
                response_status=status,
                response_body=body,
                updated_at=utcnow(),
            )
        )

    async def release(self, user_id: uuid.UUID, key: str, order_id: uuid.UUID) -> None:
        """Forget an unfinished claim (only this claim: a newer one keeps its row)."""
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.key == key,
                IdempotencyKey.order_id == order_id,
                IdempotencyKey.state == IdempotencyState.IN_PROGRESS,
            )
        )

    async def delete_stale(
        self, *, in_progress_before: datetime, completed_before: datetime
    ) -> int:
        """Forget claims a crash left in progress, and answers past their retention."""
        result = await self.session.execute(
            delete(IdempotencyKey).where(
                (
                    (IdempotencyKey.state == IdempotencyState.IN_PROGRESS)
                    & (IdempotencyKey.created_at < in_progress_before)
                )
                | (
                    (IdempotencyKey.state == IdempotencyState.COMPLETED)
                    & (IdempotencyKey.created_at < completed_before)
                )
            )
        )
        return _rowcount(result)
