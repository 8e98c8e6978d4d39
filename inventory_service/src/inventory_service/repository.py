"""SQL of stock and reservations.

Every change of stock is one conditional UPDATE, so concurrent requests are settled by
the database (the row lock on PostgreSQL, the write lock on SQLite), never by a read in
Python followed by a write."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache

from sqlalchemy import CursorResult, Table, bindparam, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from inventory_service.models import (
    Base,
    Reservation,
    ReservationLine,
    ReservationStatus,
    Restock,
    Stock,
)
from shared.db import GuardedWrite, write_once


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@cache
def _hold_write() -> GuardedWrite:
    """`hold_one`'s statements, built once and run with each reservation's values:
    building them for every call cost as much CPU as the rest of the reservation."""
    stock = _table(Stock)
    quantity = bindparam("hold_quantity", type_=stock.c.available.type)
    now = bindparam("hold_now", type_=stock.c.updated_at.type)
    take = (
        update(stock)
        .where(stock.c.product_id == bindparam("hold_product_id"), stock.c.available >= quantity)
        .values(
            available=stock.c.available - quantity,
            reserved=stock.c.reserved + quantity,
            updated_at=now,
        )
        .returning(stock.c.product_id)
    )
    reservation = {
        "order_id": "hold_order_id",
        "status": "hold_status",
        "expires_at": "hold_expires_at",
        "created_at": "hold_now",
        "updated_at": "hold_now",
    }
    line = {
        "order_id": "hold_order_id",
        "product_id": "hold_product_id",
        "quantity": "hold_quantity",
    }
    return GuardedWrite(take, [(_table(Reservation), reservation), (_table(ReservationLine), line)])


def _changed_one(result: object) -> bool:
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


class StockRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, product_id: uuid.UUID) -> Stock | None:
        return await self.session.get(Stock, product_id, populate_existing=True)

    async def get_many(self, product_ids: Iterable[uuid.UUID]) -> Sequence[Stock]:
        statement = select(Stock).where(Stock.product_id.in_(set(product_ids)))
        return (await self.session.scalars(statement)).all()

    async def set_available(
        self, product_id: uuid.UUID, available: int, now: datetime
    ) -> Stock | None:
        """Set the units on hand of an existing record; None when there is none."""
        statement = (
            update(Stock)
            .where(Stock.product_id == product_id)
            .values(available=available, updated_at=now)
            .returning(Stock)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def create_if_missing(self, product_id: uuid.UUID, now: datetime) -> bool:
        """Create an empty record (nothing available) unless the product has one;
        True when this call created it. Never touches an existing record."""
        dialect = self.session.get_bind().dialect.name
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert_(Stock)
            .values(product_id=product_id, available=0, reserved=0, sold=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=[Stock.product_id])
            .returning(Stock.product_id)
        )
        return (await self.session.execute(statement)).scalar_one_or_none() is not None

    async def upsert_available(self, product_id: uuid.UUID, available: int, now: datetime) -> Stock:
        """Create the record with `available` units, or set them if it appeared meanwhile."""
        dialect = self.session.get_bind().dialect.name
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_(Stock).values(
            product_id=product_id, available=available, reserved=0, sold=0, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[Stock.product_id],
            set_={"available": statement.excluded.available, "updated_at": now},
        )
        returning = statement.returning(Stock).execution_options(populate_existing=True)
        return (await self.session.scalars(returning)).one()

    async def reserve(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from available to reserved; False when fewer are available."""
        result = await self.session.execute(
            update(Stock)
            .where(Stock.product_id == product_id, Stock.available >= quantity)
            .values(
                available=Stock.available - quantity,
                reserved=Stock.reserved + quantity,
                updated_at=now,
            )
        )
        return _changed_one(result)

    async def sell_reserved(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from reserved to sold."""
        result = await self.session.execute(
            update(Stock)
            .where(Stock.product_id == product_id, Stock.reserved >= quantity)
            .values(reserved=Stock.reserved - quantity, sold=Stock.sold + quantity, updated_at=now)
        )
        return _changed_one(result)

    async def return_reserved(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from reserved back to available."""
        result = await self.session.execute(
            update(Stock)
            .where(Stock.product_id == product_id, Stock.reserved >= quantity)
            .values(
                reserved=Stock.reserved - quantity,
                available=Stock.available + quantity,
                updated_at=now,
            )
        )
        return _changed_one(result)

    async def return_sold(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from sold back to available."""
        result = await self.session.execute(
            update(Stock)
            .where(Stock.product_id == product_id, Stock.sold >= quantity)
            .values(
                sold=Stock.sold - quantity, available=Stock.available + quantity, updated_at=now
            )
        )
        return _changed_one(result)


class ReservationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, order_id: uuid.UUID) -> Reservation | None:
        return await self.session.get(
            Reservation,
            order_id,
            options=[selectinload(Reservation.lines)],
            populate_existing=True,
        )

    async def add(self, order_id: uuid.UUID, expires_at: datetime, now: datetime) -> None:
        """Insert the reservation row; a second one for the order breaks the primary key."""
        await self.session.execute(
            insert(Reservation).values(
                order_id=order_id,
                status=ReservationStatus.RESERVED,
                reason=None,
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
        )

    async def hold_one(
        self,
        order_id: uuid.UUID,
        product_id: uuid.UUID,
        quantity: int,
        expires_at: datetime,
        now: datetime,
    ) -> bool:
        """A one-line reservation, committed: `quantity` units of the product move from
        available to reserved and, only if they did, the reservation and its line are
        inserted (`write_once`: one statement on PostgreSQL, so the stock row's lock is
        held for that statement and its commit, never across a round trip to this
        process). False, nothing written, when fewer units are available; a second
        reservation for the order breaks the primary key (IntegrityError)."""
        values = {
            "hold_product_id": product_id,
            "hold_quantity": quantity,
            "hold_order_id": order_id,
            "hold_status": ReservationStatus.RESERVED,
            "hold_expires_at": expires_at,
            "hold_now": now,
        }
        return await write_once(self.session, _hold_write(), values) is not None

    async def add_lines(
        self, order_id: uuid.UUID, quantities: Mapping[uuid.UUID, int]
    ) -> list[ReservationLine]:
        """Insert the lines (in the order given); returns them as written."""
        rows = [
            {"order_id": order_id, "product_id": product_id, "quantity": quantity}
            for product_id, quantity in quantities.items()
        ]
        await self.session.execute(insert(ReservationLine), rows)
        return [ReservationLine(**row) for row in rows]

    async def lines(self, order_id: uuid.UUID) -> Sequence[ReservationLine]:
        statement = (
            select(ReservationLine)
            .where(ReservationLine.order_id == order_id)
            .order_by(ReservationLine.product_id)
        )
        return (await self.session.scalars(statement)).all()

    async def change_status(
        self,
        order_id: uuid.UUID,
        *,
        expected: ReservationStatus,
        new: ReservationStatus,
        now: datetime,
        reason: str | None = None,
        expired_by: datetime | None = None,
    ) -> Reservation | None:
        """Move the reservation from `expected` to `new` and return it as it is now
        (its `lines` not loaded); None when it was not `expected` (or, with
        `expired_by`, had not expired by then).

        Only one of two concurrent transitions from the same status can succeed: the
        second waits for the first's row lock and then finds the status changed."""
        statement = update(Reservation).where(
            Reservation.order_id == order_id, Reservation.status == expected
        )
        if expired_by is not None:
            statement = statement.where(Reservation.expires_at <= expired_by)
        statement = (
            statement.values(status=new, reason=reason, updated_at=now)
            .returning(Reservation)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def add_restock(self, refund_id: uuid.UUID, order_id: uuid.UUID, now: datetime) -> bool:
        """Record that the refund's units go back on sale; False when it was recorded
        before (the primary key settles duplicates, concurrent ones included)."""
        dialect = self.session.get_bind().dialect.name
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert_(Restock)
            .values(refund_id=refund_id, order_id=order_id, created_at=now)
            .on_conflict_do_nothing(index_elements=[Restock.refund_id])
            .returning(Restock.refund_id)
        )
        return (await self.session.execute(statement)).scalar_one_or_none() is not None

    async def restock_line(self, order_id: uuid.UUID, product_id: uuid.UUID, quantity: int) -> bool:
        """Count `quantity` more of the line's sold units as put back on sale; False
        when the line has fewer sold units left (or does not exist)."""
        result = await self.session.execute(
            update(ReservationLine)
            .where(
                ReservationLine.order_id == order_id,
                ReservationLine.product_id == product_id,
                ReservationLine.restocked + quantity <= ReservationLine.quantity,
            )
            .values(restocked=ReservationLine.restocked + quantity)
        )
        return _changed_one(result)

    async def expired_order_ids(self, now: datetime, limit: int) -> Sequence[uuid.UUID]:
        """Orders whose reservation still holds stock past its expiry, soonest first."""
        statement = (
            select(Reservation.order_id)
            # A literal, not a parameter: only then can the partial index on
            # `status = 'reserved'` serve the query (SQLite and generic PostgreSQL plans).
            .where(
                Reservation.status == literal_column(f"'{ReservationStatus.RESERVED.value}'"),
                Reservation.expires_at <= now,
            )
            .order_by(Reservation.expires_at)
            .limit(limit)
        )
        return (await self.session.scalars(statement)).all()
