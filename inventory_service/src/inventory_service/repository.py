"""SQL of stock and reservations.

Every change of stock is one conditional UPDATE, so concurrent requests are settled by
the database (the row lock on PostgreSQL, the write lock on SQLite), never by a read in
Python followed by a write."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache

from sqlalchemy import (
    CursorResult,
    Table,
    Update,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

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


def taken_into(status: ReservationStatus) -> str:
    """The stock column holding the units of a new reservation in `status`: `reserved`
    while it waits for its commit, `sold` when it is made committed (a paid order)."""
    return "sold" if status is ReservationStatus.COMMITTED else "reserved"


@cache
def _take_write(target: str) -> GuardedWrite:
    """`take_one`'s statements for units moving to `target` (reserved, or sold), built
    once and run with each reservation's values: building them for every call cost as
    much CPU as the rest of the reservation."""
    # The stock move of `StockRepository.take`, with the same parameters.
    take = _move_units("available", target).returning(_table(Stock).c.product_id)
    reservation = {
        "order_id": "hold_order_id",
        "status": "hold_status",
        "expires_at": "hold_expires_at",
        "created_at": "move_now",
        "updated_at": "move_now",
    }
    line = {
        "order_id": "hold_order_id",
        "product_id": "move_product_id",
        "quantity": "move_quantity",
    }
    return GuardedWrite(take, [(_table(Reservation), reservation), (_table(ReservationLine), line)])


@cache
def _sell_write() -> GuardedWrite:
    """`sell_one`'s statements, built once: the reservation from `reserved` to
    `committed` when it has one line (returning that line), then the line's units from
    reserved to sold. One line needs no lock order; a reservation of several takes its
    stock rows in product id order, in a transaction (`ReservationService.commit_held`)."""
    reservations, lines, stock = _table(Reservation), _table(ReservationLine), _table(Stock)
    of_this_order = lines.c.order_id == reservations.c.order_id
    now = bindparam("sell_now", type_=reservations.c.updated_at.type)
    guard = (
        update(reservations)
        .where(
            reservations.c.order_id == bindparam("sell_order_id"),
            reservations.c.status == bindparam("sell_from", type_=reservations.c.status.type),
            select(func.count()).where(of_this_order).scalar_subquery() == 1,
        )
        .values(status=bindparam("sell_to", type_=reservations.c.status.type), updated_at=now)
        .returning(
            *reservations.c,
            select(lines.c.product_id).where(of_this_order).scalar_subquery().label("product_id"),
            select(lines.c.quantity).where(of_this_order).scalar_subquery().label("quantity"),
        )
    )
    # No condition on `reserved`: its CHECK refuses a line holding more units than the
    # stock has reserved, and the whole write with it.
    sell = (
        update(stock)
        .where(
            stock.c.product_id == lines.c.product_id,
            lines.c.order_id == bindparam("sell_order_id"),
        )
        .values(
            reserved=stock.c.reserved - lines.c.quantity,
            sold=stock.c.sold + lines.c.quantity,
            updated_at=now,
        )
    )
    return GuardedWrite(guard, updates=[sell])


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

    async def take(
        self, product_id: uuid.UUID, quantity: int, status: ReservationStatus, now: datetime
    ) -> bool:
        """Move `quantity` units from available to where a reservation in `status` keeps
        them (`taken_into`); False when fewer are available."""
        return await self._move("available", taken_into(status), product_id, quantity, now)

    async def sell_reserved(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from reserved to sold."""
        return await self._move("reserved", "sold", product_id, quantity, now)

    async def return_reserved(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from reserved back to available."""
        return await self._move("reserved", "available", product_id, quantity, now)

    async def return_sold(self, product_id: uuid.UUID, quantity: int, now: datetime) -> bool:
        """Move `quantity` units from sold back to available."""
        return await self._move("sold", "available", product_id, quantity, now)

    async def _move(
        self, source: str, target: str, product_id: uuid.UUID, quantity: int, now: datetime
    ) -> bool:
        """Move `quantity` units of the product from `source` to `target`; False, nothing
        changed, when `source` has fewer. A Core statement: a `Stock` loaded before in
        this session is not refreshed (`get` reads it afresh)."""
        values = {"move_product_id": product_id, "move_quantity": quantity, "move_now": now}
        return _changed_one(await self.session.execute(_move_units(source, target), values))


@cache
def _move_units(source: str, target: str) -> Update:
    """The UPDATE that moves units of one product from `source` to `target` (built once
    per pair, run with each call's values)."""
    stock = _table(Stock)
    quantity = bindparam("move_quantity", type_=stock.c[source].type)
    return (
        update(stock)
        .where(stock.c.product_id == bindparam("move_product_id"), stock.c[source] >= quantity)
        .values(
            {
                source: stock.c[source] - quantity,
                target: stock.c[target] + quantity,
                "updated_at": bindparam("move_now", type_=stock.c.updated_at.type),
            }
        )
    )


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

    async def add(
        self, order_id: uuid.UUID, status: ReservationStatus, expires_at: datetime, now: datetime
    ) -> None:
        """Insert the reservation row; a second one for the order breaks the primary key."""
        await self.session.execute(
            insert(Reservation).values(
                order_id=order_id,
                status=status,
                reason=None,
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
        )

    async def take_one(
        self,
        order_id: uuid.UUID,
        product_id: uuid.UUID,
        quantity: int,
        status: ReservationStatus,
        expires_at: datetime,
        now: datetime,
    ) -> bool:
        """A one-line reservation in `status`, committed: `quantity` units of the product
        move from available to reserved (`reserved`) or sold (`committed`) and, only if
        they did, the reservation and its line are inserted (`write_once`: one statement
        on PostgreSQL, so the stock row's lock is held for that statement and its
        commit, never across a round trip to this process). False, nothing written,
        when fewer units are available; a second reservation for the order breaks the
        primary key (IntegrityError)."""
        values = {
            "move_product_id": product_id,
            "move_quantity": quantity,
            "hold_order_id": order_id,
            "hold_status": status,
            "hold_expires_at": expires_at,
            "move_now": now,
        }
        write = _take_write(taken_into(status))
        return await write_once(self.session, write, values) is not None

    async def sell_one(self, order_id: uuid.UUID, now: datetime) -> Reservation | None:
        """A one-line reservation's held units sold, committed (`write_once`: one
        statement on PostgreSQL, where `commit_held`'s transaction is five round trips);
        returns the reservation, now `committed`, with its line. None, nothing written,
        when it is not `reserved` or has another number of lines. Raises IntegrityError,
        nothing written, when the stock has fewer units reserved than the line."""
        values = {
            "sell_order_id": order_id,
            "sell_from": ReservationStatus.RESERVED,
            "sell_to": ReservationStatus.COMMITTED,
            "sell_now": now,
        }
        row = await write_once(self.session, _sell_write(), values)
        if row is None:
            return None
        reservation = Reservation(
            order_id=row["order_id"],
            status=row["status"],
            reason=row["reason"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        line = ReservationLine(
            order_id=order_id, product_id=row["product_id"], quantity=row["quantity"]
        )
        set_committed_value(reservation, "lines", [line])
        return reservation

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
        return (await self.session.scalars(_LINES, {"lines_order_id": order_id})).all()

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
        values = {
            "status_order_id": order_id,
            "status_expected": expected,
            "status_new": new,
            "status_reason": reason,
            "status_now": now,
        }
        if expired_by is not None:
            values["status_expired_by"] = expired_by
        statement = _change_status(expires=expired_by is not None)
        return (await self.session.scalars(statement, values)).one_or_none()

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


#: An order's reservation lines, in product id order.
_LINES = (
    select(ReservationLine)
    .where(ReservationLine.order_id == bindparam("lines_order_id"))
    .order_by(ReservationLine.product_id)
)


@cache
def _change_status(*, expires: bool) -> Update:
    """`change_status`'s UPDATE (built once, with or without the expiry condition),
    returning the reservation as it is now. The rows it returns refresh any copy loaded
    in the session, so no other synchronisation is needed."""
    table = _table(Reservation)
    statement = update(Reservation).where(
        Reservation.order_id == bindparam("status_order_id"),
        Reservation.status == bindparam("status_expected", type_=table.c.status.type),
    )
    if expires:
        statement = statement.where(
            Reservation.expires_at <= bindparam("status_expired_by", type_=table.c.expires_at.type)
        )
    return (
        statement.values(
            status=bindparam("status_new", type_=table.c.status.type),
            reason=bindparam("status_reason", type_=table.c.reason.type),
            updated_at=bindparam("status_now", type_=table.c.updated_at.type),
        )
        .returning(Reservation)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
