"""SQL of orders and idempotency keys.

Status changes are conditional UPDATEs (`WHERE status IN (...)`) and a key is claimed by
an INSERT that a primary key settles, so races are decided by the database, never by a
read in Python followed by a write."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    CursorResult,
    Table,
    Update,
    bindparam,
    delete,
    func,
    inspect,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from eventbus.outbox import mark_staged
from order_service.models import (
    Base,
    Cart,
    CartLine,
    IdempotencyKey,
    IdempotencyState,
    OrderLine,
    OrderTimelineEntry,
    PurchaseOrder,
    Refund,
    outbox_event,
)
from order_service.pricing import PricedOrder
from order_service.states import (
    TIMELINE_EVENT_OF_STATUS,
    CancelReason,
    OrderStatus,
    TimelineEvent,
)
from shared.db import GuardedWrite, utcnow, write_once
from shared.paging import PageResult, SortKey, fetch_page
from shared.schemas import PageParams


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


def _insert(session: AsyncSession) -> Any:
    """The dialect's INSERT, for `ON CONFLICT` clauses."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def pending_order(
    order_id: uuid.UUID,
    user_id: uuid.UUID,
    priced: PricedOrder,
    shipping_address: dict[str, Any] | None,
) -> PurchaseOrder:
    """A new `pending` order with its lines, not yet written (`create_claimed` writes it)."""
    now = utcnow()
    return PurchaseOrder(
        id=order_id,
        user_id=user_id,
        status=OrderStatus.PENDING,
        cancel_reason=None,
        total_amount=priced.total_amount,
        currency=priced.currency,
        payment_id=None,
        compensation_pending=False,
        shipping_address=shipping_address,
        refunded_amount=Decimal("0.00"),
        created_at=now,
        updated_at=now,
        lines=[
            OrderLine(
                order_id=order_id,
                product_id=line.product_id,
                position=position,
                product_name=line.product_name,
                unit_price=line.unit_price,
                quantity=line.quantity,
                line_total=line.line_total,
                refunded_quantity=0,
            )
            for position, line in enumerate(priced.lines)
        ],
    )


def _columns(table: Table, prefix: str, *, leave_out: Collection[str] = ()) -> dict[str, str]:
    """The parameter name of each of `table`'s columns in a `GuardedWrite`."""
    return {c.key: f"{prefix}_{c.key}" for c in table.columns if c.key not in leave_out}


def _values(prefix: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{name}": value for name, value in row.items()}


def _param(table: Table, column: str, name: str) -> BindParameter[Any]:
    return bindparam(name, type_=table.c[column].type)


#: A timeline entry's id comes from its sequence.
_TIMELINE_LEAVE_OUT = ("id",)
#: The columns a claim of an Idempotency-Key writes.
_CLAIM_COLUMNS = (
    "user_id",
    "key",
    "request_fingerprint",
    "state",
    "order_id",
    "created_at",
    "updated_at",
)


@cache
def _create_write(dialect: str, lines: int) -> GuardedWrite:
    """`create_claimed`'s statements for an order of `lines` lines (built once each)."""
    keys, timeline = _table(IdempotencyKey), _table(OrderTimelineEntry)
    claimed = {name: _param(keys, name, f"claim_{name}") for name in _CLAIM_COLUMNS}
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    claim = (
        insert_(keys)
        .values(claimed)
        .on_conflict_do_nothing(index_elements=[keys.c.user_id, keys.c.key])
        .returning(keys.c.key)
    )
    orders, order_lines = _table(PurchaseOrder), _table(OrderLine)
    return GuardedWrite(
        claim,
        [
            (orders, _columns(orders, "order")),
            *((order_lines, _columns(order_lines, f"line{index}")) for index in range(lines)),
            (timeline, _columns(timeline, "timeline", leave_out=_TIMELINE_LEAVE_OUT)),
            (outbox_event, _columns(outbox_event, "event")),
        ],
    )


@cache
def _settle_write() -> GuardedWrite:
    """`settle_pending`'s statements (built once)."""
    orders, timeline = _table(PurchaseOrder), _table(OrderTimelineEntry)
    changed = ("status", "cancel_reason", "payment_id", "compensation_pending", "updated_at")
    settle = (
        update(orders)
        .where(
            orders.c.id == bindparam("settle_order_id"),
            orders.c.status == OrderStatus.PENDING,
        )
        .values({name: _param(orders, name, f"settle_{name}") for name in changed})
        .returning(orders.c.id)
    )
    return GuardedWrite(
        settle,
        [
            (timeline, _columns(timeline, "timeline", leave_out=_TIMELINE_LEAVE_OUT)),
            (outbox_event, _columns(outbox_event, "event")),
        ],
        [_store_answer()],
    )


@cache
def _store_answer() -> Update:
    """The UPDATE storing the answer of the claim that created an order (built once; its
    parameters are `_answer_values`)."""
    keys = _table(IdempotencyKey)
    return (
        update(keys)
        .where(
            keys.c.user_id == bindparam("answer_user_id"),
            keys.c.key == bindparam("answer_key"),
            keys.c.order_id == bindparam("answer_order_id"),
        )
        .values(
            state=IdempotencyState.COMPLETED,
            response_status=_param(keys, "response_status", "answer_status"),
            response_body=_param(keys, "response_body", "answer_body"),
            updated_at=_param(keys, "updated_at", "answer_updated_at"),
        )
    )


def _answer_values(
    user_id: uuid.UUID, key: str, order_id: uuid.UUID, status: int, body: Any, at: datetime
) -> dict[str, Any]:
    """`_store_answer`'s parameters."""
    return {
        "answer_user_id": user_id,
        "answer_key": key,
        "answer_order_id": order_id,
        "answer_status": status,
        "answer_body": body,
        "answer_updated_at": at,
    }


def _order_row(order: PurchaseOrder) -> dict[str, Any]:
    return {column.key: getattr(order, column.key) for column in _table(PurchaseOrder).columns}


def _line_row(line: OrderLine) -> dict[str, Any]:
    return {column.key: getattr(line, column.key) for column in _table(OrderLine).columns}


def _timeline_row(order: PurchaseOrder, at: datetime, detail: str | None = None) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "event": TIMELINE_EVENT_OF_STATUS[order.status],
        "status": order.status,
        "detail": detail,
        "at": at,
    }


def _event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """Every outbox column, those the new row leaves out NULL."""
    return {column.key: event.get(column.key) for column in outbox_event.columns}


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

    async def create_claimed(
        self, key: str, fingerprint: str, order: PurchaseOrder, event: Mapping[str, Any]
    ) -> bool:
        """The checkout's first write: claim the Idempotency-Key (`in_progress`, an
        INSERT ... ON CONFLICT DO NOTHING on its primary key) and, only when that claimed
        it, insert the `pending` order `pending_order` made, its lines, its `created`
        timeline entry and its `event` (an outbox row), committed together; False,
        nothing written, when the user already has the key. One statement on
        PostgreSQL (`write_once`)."""
        claim = {
            "user_id": order.user_id,
            "key": key,
            "request_fingerprint": fingerprint,
            "state": IdempotencyState.IN_PROGRESS,
            "order_id": order.id,
            "created_at": order.created_at,
            "updated_at": order.created_at,
        }
        values = {
            **_values("claim", claim),
            **_values("order", _order_row(order)),
            **{
                name: value
                for index, line in enumerate(order.lines)
                for name, value in _values(f"line{index}", _line_row(line)).items()
            },
            **_values("timeline", _timeline_row(order, order.created_at)),
            **_values("event", _event_row(event)),
        }
        write = _create_write(self.session.get_bind().dialect.name, len(order.lines))
        mark_staged(self.session)
        return await write_once(self.session, write, values) is not None

    async def settle_pending(
        self, order: PurchaseOrder, event: Mapping[str, Any], key: str, answer: Any
    ) -> bool:
        """The checkout's last write: move the order from `pending` to what `order`
        says now (status, cancel reason, payment, `compensation_pending`, `updated_at`),
        recording it on the timeline, with its `event` (an outbox row) and the `answer`
        stored for its Idempotency-Key, committed together; False, nothing written, when
        the order was no longer pending. One statement on PostgreSQL (`write_once`)."""
        detail = order.cancel_reason.value if order.cancel_reason is not None else None
        values = {
            "settle_order_id": order.id,
            "settle_status": order.status,
            "settle_cancel_reason": order.cancel_reason,
            "settle_payment_id": order.payment_id,
            "settle_compensation_pending": order.compensation_pending,
            "settle_updated_at": order.updated_at,
            **_values("timeline", _timeline_row(order, order.updated_at, detail)),
            **_values("event", _event_row(event)),
            **_answer_values(order.user_id, key, order.id, 201, answer, order.updated_at),
        }
        mark_staged(self.session)
        return await write_once(self.session, _settle_write(), values) is not None

    async def add(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        priced: PricedOrder,
        shipping_address: dict[str, Any] | None = None,
    ) -> PurchaseOrder:
        """Insert a `pending` order with its lines and its `created` timeline entry
        (flushed, not committed)."""
        order = pending_order(order_id, user_id, priced, shipping_address)
        self.session.add(order)
        self.add_timeline_entry(order, TimelineEvent.CREATED, at=order.created_at)
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
        conditions: Sequence[ColumnElement[bool]] = (),
        **values: Any,
    ) -> PurchaseOrder | None:
        """Move the order to `to` if it is in one of `sources`, recording it on the
        timeline in the same transaction; the order as it is now (lines loaded), or None
        when it was in another status (or does not exist)."""
        now = utcnow()
        statement = (
            update(PurchaseOrder)
            .where(PurchaseOrder.id == order_id, PurchaseOrder.status.in_(sources), *conditions)
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

    async def add_refunded(
        self, order_id: uuid.UUID, amount: Decimal, sources: Collection[OrderStatus], now: datetime
    ) -> PurchaseOrder | None:
        """Add `amount` to the order's refunded amount if it is in one of `sources`
        (holding its row lock to the end of the transaction); None otherwise."""
        statement = (
            update(PurchaseOrder)
            .where(PurchaseOrder.id == order_id, PurchaseOrder.status.in_(sources))
            .values(refunded_amount=PurchaseOrder.refunded_amount + amount, updated_at=now)
            .returning(PurchaseOrder)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def refund_units(self, order_id: uuid.UUID, product_id: uuid.UUID, quantity: int) -> bool:
        """Count `quantity` more units of the line as refunded; False when the line
        has fewer left (or the order has no such line). One conditional UPDATE: of
        concurrent refunds of the last unit exactly one passes."""
        result = await self.session.execute(
            update(OrderLine)
            .where(
                OrderLine.order_id == order_id,
                OrderLine.product_id == product_id,
                OrderLine.refunded_quantity + quantity <= OrderLine.quantity,
            )
            .values(refunded_quantity=OrderLine.refunded_quantity + quantity)
        )
        return _rowcount(result) == 1

    async def currencies(self, order_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str]:
        statement = select(PurchaseOrder.id, PurchaseOrder.currency).where(
            PurchaseOrder.id.in_(order_ids)
        )
        rows = await self.session.execute(statement)
        return {row.id: row.currency for row in rows}

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
        now = utcnow()
        statement = (
            _insert(self.session)(IdempotencyKey)
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
        """Store the answer of the claim that created `order_id` (not committed)."""
        values = _answer_values(user_id, key, order_id, status, body, utcnow())
        await self.session.execute(_store_answer(), values)

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


class CartRepository:
    """A cart's lines. Every change first locks the cart's row (`lock`), so the count of
    lines a change sees cannot be changed by another request before it commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> Cart | None:
        return await self.session.get(Cart, user_id, populate_existing=True)

    async def lines(self, user_id: uuid.UUID) -> Sequence[CartLine]:
        """The cart's lines in the order they were added."""
        statement = (
            select(CartLine)
            .where(CartLine.user_id == user_id)
            .order_by(CartLine.added_at, CartLine.product_id)
        )
        return (await self.session.scalars(statement)).all()

    async def lock(self, user_id: uuid.UUID, now: datetime) -> None:
        """Create the cart or mark it changed at `now`, holding its row lock (the
        database's write lock on SQLite) until the transaction ends."""
        statement = _insert(self.session)(Cart).values(user_id=user_id, updated_at=now)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[Cart.user_id], set_={"updated_at": statement.excluded.updated_at}
            )
        )

    async def set_quantity(
        self, user_id: uuid.UUID, product_id: uuid.UUID, quantity: int, now: datetime
    ) -> bool:
        """Change an existing line's quantity; False when the cart has no such line."""
        result = await self.session.execute(
            update(CartLine)
            .where(CartLine.user_id == user_id, CartLine.product_id == product_id)
            .values(quantity=quantity)
        )
        return _rowcount(result) == 1

    async def count(self, user_id: uuid.UUID) -> int:
        total = await self.session.scalar(
            select(func.count()).select_from(CartLine).where(CartLine.user_id == user_id)
        )
        return total or 0

    async def add_line(
        self, user_id: uuid.UUID, product_id: uuid.UUID, quantity: int, now: datetime
    ) -> None:
        self.session.add(
            CartLine(user_id=user_id, product_id=product_id, quantity=quantity, added_at=now)
        )
        await self.session.flush()

    async def remove_line(self, user_id: uuid.UUID, product_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            delete(CartLine).where(CartLine.user_id == user_id, CartLine.product_id == product_id)
        )
        return _rowcount(result) == 1

    async def remove_ordered(
        self, user_id: uuid.UUID, lines: Collection[tuple[uuid.UUID, int]]
    ) -> int:
        """Remove the lines an order bought: the same product and quantity. A line
        changed while the order was being placed stays in the cart."""
        result = await self.session.execute(
            delete(CartLine).where(
                CartLine.user_id == user_id,
                tuple_(CartLine.product_id, CartLine.quantity).in_(list(lines)),
            )
        )
        return _rowcount(result)

    async def delete(self, user_id: uuid.UUID) -> None:
        await self.session.execute(delete(CartLine).where(CartLine.user_id == user_id))
        await self.session.execute(delete(Cart).where(Cart.user_id == user_id))


class RefundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_key(self, requested_by: uuid.UUID, key: str) -> Refund | None:
        statement = (
            select(Refund)
            .where(Refund.requested_by == requested_by, Refund.idempotency_key == key)
            .options(selectinload(Refund.lines))
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def add(self, refund: Refund) -> None:
        """Insert the refund and its lines (flushed, not committed): a second refund
        with the same (requested_by, idempotency_key) breaks the unique constraint."""
        self.session.add(refund)
        await self.session.flush()

    async def page(
        self, order_id: uuid.UUID, *, limit: int, offset: int
    ) -> tuple[Sequence[Refund], int]:
        """One page of the order's refunds, newest first, and the total."""
        total = await self.session.scalar(
            select(func.count()).select_from(Refund).where(Refund.order_id == order_id)
        )
        statement = (
            select(Refund)
            .where(Refund.order_id == order_id)
            .options(selectinload(Refund.lines))
            .order_by(Refund.created_at.desc(), Refund.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return (await self.session.scalars(statement)).all(), total or 0

    async def unpaid(self, before: datetime, limit: int) -> Sequence[Refund]:
        """Refunds recorded before `before` whose money has not gone back yet."""
        statement = (
            select(Refund)
            .where(Refund.payment_refund_id.is_(None), Refund.created_at < before)
            .order_by(Refund.created_at)
            .limit(limit)
        )
        return (await self.session.scalars(statement)).all()

    async def mark_paid(self, refund_id: uuid.UUID, reference: str) -> None:
        await self.session.execute(
            update(Refund)
            .where(Refund.id == refund_id, Refund.payment_refund_id.is_(None))
            .values(payment_refund_id=reference)
        )
