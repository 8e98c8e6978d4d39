"""The inventory's domain logic: what the routes and the sweeper call.

Every change of stock happens in one transaction with the status change that causes
it, and each status change is a conditional UPDATE (`WHERE status = :expected`), so a
reservation is committed or given back at most once however many requests race.
Stock rows are always touched in product id order, so two reservations over the same
products cannot deadlock on PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from inventory_service.errors import (
    InsufficientStock,
    ProductNotFound,
    ReservationMismatch,
    ReservationNotFound,
    ReservationReleased,
    StockNotFound,
)
from inventory_service.metrics import count_reservation
from inventory_service.models import Reservation, ReservationLine, ReservationStatus, Stock
from inventory_service.product_client import ProductClient
from inventory_service.repository import ReservationRepository, StockRepository
from inventory_service.schemas import ReservationCreate
from shared.db import is_unique_violation, utcnow

logger = logging.getLogger(__name__)

EXPIRED = "expired"


class StockInconsistent(RuntimeError):
    """A reservation's units were not where its status says they are (a bug, or someone
    edited the tables by hand); the transaction is rolled back."""


class RestockTooEarly(RuntimeError):
    """A refund of an order whose reservation is held, not committed: a refund comes
    only after the order was confirmed, which the saga does once the units are sold, so
    this is raised to hand the event back and retry it rather than record the refund as
    having nothing to restock."""


class StockService:
    def __init__(self, session: AsyncSession, catalog: ProductClient) -> None:
        self.session = session
        self.catalog = catalog
        self.stock = StockRepository(session)

    async def get(self, product_id: uuid.UUID) -> Stock:
        stock = await self.stock.get(product_id)
        if stock is None:
            raise StockNotFound(product_id)
        return stock

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> Sequence[Stock]:
        """The stock records among `product_ids`, in the order asked."""
        records = {record.product_id: record for record in await self.stock.get_many(product_ids)}
        await self.session.commit()
        return [records[id_] for id_ in dict.fromkeys(product_ids) if id_ in records]

    async def set_available(self, product_id: uuid.UUID, available: int) -> tuple[Stock, bool]:
        """Set the units on hand; returns the record and whether it was created.

        An existing record is updated without asking the catalog (so stock can be
        corrected while product_service is down); a new one needs a catalog product."""
        stock = await self.stock.set_available(product_id, available, utcnow())
        if stock is not None:
            await self.session.commit()
            return stock, False
        # No lock is held while the catalog is asked (SQLite would block every writer).
        await self.session.rollback()
        if not await self.catalog.has_product(product_id):
            raise ProductNotFound(product_id)
        # A concurrent PUT may have created it meanwhile: the upsert settles that.
        stock = await self.stock.upsert_available(product_id, available, utcnow())
        await self.session.commit()
        return stock, True


class ReservationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.stock = StockRepository(session)
        self.reservations = ReservationRepository(session)

    async def get(self, order_id: uuid.UUID) -> Reservation:
        reservation = await self.reservations.get(order_id)
        if reservation is None:
            raise ReservationNotFound(order_id)
        return reservation

    async def reserve(
        self, data: ReservationCreate, *, default_ttl_seconds: int
    ) -> tuple[Reservation, bool]:
        """Hold every line's quantity for the order, or nothing; returns the reservation
        and whether this call made it (False: the order already had one). With
        `data.sell` (the order is paid) the units are sold at once and the reservation
        is `committed`.

        The reservation row goes in first: a repeated or concurrent request for the same
        order breaks its primary key instead of reserving twice. The stock rows come last,
        just before the commit: every order of a product updates its row, so the time
        between that UPDATE and the commit is how long each order makes the next wait."""
        quantities = dict(sorted(data.quantities().items()))
        ttl = data.ttl_seconds if data.ttl_seconds is not None else default_ttl_seconds
        now = utcnow()
        status = ReservationStatus.COMMITTED if data.sell else ReservationStatus.RESERVED
        try:
            lines = await self._take(
                data.order_id, quantities, status, now + timedelta(seconds=ttl), now
            )
        except IntegrityError as error:
            await self.session.rollback()
            if not is_unique_violation(error):
                raise
            existing = await self.get(data.order_id)
            if {line.product_id: line.quantity for line in existing.lines} != quantities:
                raise ReservationMismatch(data.order_id) from error
            count_reservation("replayed")
            return existing, False
        count_reservation("sold" if data.sell else "reserved")
        # What was just written, without reading it back.
        reservation = Reservation(
            order_id=data.order_id,
            status=status,
            reason=None,
            expires_at=now + timedelta(seconds=ttl),
            created_at=now,
            updated_at=now,
        )
        set_committed_value(reservation, "lines", lines)
        return reservation, True

    async def _take(
        self,
        order_id: uuid.UUID,
        quantities: dict[uuid.UUID, int],
        status: ReservationStatus,
        expires_at: datetime,
        now: datetime,
    ) -> list[ReservationLine]:
        """Write the reservation in `status` (`reserved`: the units are held;
        `committed`: sold), its lines and the units' move, committed; raises
        `InsufficientStock` (nothing written) or the reservation's IntegrityError."""
        if len(quantities) == 1:
            # One line is all or nothing by itself: the stock UPDATE guards the inserts,
            # in one statement (`write_once`).
            [(product_id, quantity)] = quantities.items()
            if not await self.reservations.take_one(
                order_id, product_id, quantity, status, expires_at, now
            ):
                count_reservation("insufficient")
                raise InsufficientStock(product_id)
            return [ReservationLine(order_id=order_id, product_id=product_id, quantity=quantity)]
        await self.reservations.add(order_id, status, expires_at, now)
        lines = await self.reservations.add_lines(order_id, quantities)
        for product_id, quantity in quantities.items():
            if not await self.stock.take(product_id, quantity, status, now):
                await self.session.rollback()
                count_reservation("insufficient")
                raise InsufficientStock(product_id)
        await self.session.commit()
        return lines

    async def commit(self, order_id: uuid.UUID) -> Reservation:
        """Turn the held units into sold ones; committing again changes nothing."""
        try:
            committed = await self.reservations.sell_one(order_id, utcnow())
        except IntegrityError as error:
            # Only the stock's CHECKs can refuse it: fewer units reserved than held.
            logger.error(
                "stock does not match the reservation",
                extra={"order_id": str(order_id), "column": "reserved"},
            )
            raise StockInconsistent(
                f"the stock has fewer reserved units than order {order_id} holds"
            ) from error
        if committed is not None:
            count_reservation("committed")
            return committed
        # Several lines (or not `reserved` any more): in a transaction.
        if committed := await self.commit_held(order_id):
            await self.session.commit()
            count_reservation("committed")
            return committed
        await self.session.rollback()
        reservation = await self.get(order_id)
        if reservation.status is ReservationStatus.RELEASED:
            raise ReservationReleased(reservation)
        return reservation

    async def release(self, order_id: uuid.UUID, reason: str) -> Reservation:
        """Give the order's units back to available, whether they were held or already
        sold (an order cancelled after confirmation); releasing again changes nothing."""
        if not await self.release_held_or_sold(order_id, reason):
            await self.session.rollback()
            return await self.get(order_id)
        await self.session.commit()
        count_reservation("released", reason)
        return await self.get(order_id)

    async def commit_held(self, order_id: uuid.UUID) -> Reservation | None:
        """`commit` in the caller's transaction (the caller commits): the reservation,
        lines loaded, when it was `reserved` and is now `committed`; None when it was
        not (missing, committed already, or released)."""
        now = utcnow()
        reservation = await self.reservations.change_status(
            order_id, expected=ReservationStatus.RESERVED, new=ReservationStatus.COMMITTED, now=now
        )
        if reservation is None:
            return None
        lines = await self._lines(order_id)
        for line in lines:
            if not await self.stock.sell_reserved(line.product_id, line.quantity, now):
                await self._inconsistent(order_id, line.product_id, "reserved")
        set_committed_value(reservation, "lines", lines)
        return reservation

    async def release_held_or_sold(self, order_id: uuid.UUID, reason: str) -> bool:
        """`release` in the caller's transaction (the caller commits): True when this
        call gave the units back, False when there was nothing to give (missing, or
        released already)."""
        now = utcnow()
        if await self.reservations.change_status(
            order_id,
            expected=ReservationStatus.RESERVED,
            new=ReservationStatus.RELEASED,
            reason=reason,
            now=now,
        ):
            await self._give_back(order_id, now, held=True)
            return True
        if await self.reservations.change_status(
            order_id,
            expected=ReservationStatus.COMMITTED,
            new=ReservationStatus.RELEASED,
            reason=reason,
            now=now,
        ):
            await self._give_back(order_id, now, held=False)
            return True
        return False

    async def restock(
        self, refund_id: uuid.UUID, order_id: uuid.UUID, lines: Sequence[tuple[uuid.UUID, int]]
    ) -> bool:
        """Put a refund's units back on sale (sold -> available), in the caller's
        transaction; once per refund, and never more units of a line than the order
        bought and still has sold. False when there was nothing to do."""
        now = utcnow()
        if not await self.reservations.add_restock(refund_id, order_id, now):
            return False  # this refund was restocked before
        reservation = await self.reservations.get(order_id)
        if reservation is not None and reservation.status is ReservationStatus.RESERVED:
            raise RestockTooEarly(f"order {order_id} is not committed yet")
        if reservation is None or reservation.status is not ReservationStatus.COMMITTED:
            # Never sold here (or given back whole already): no sold units to return.
            logger.warning(
                "refund not restocked: the order has no sold units",
                extra={"order_id": str(order_id), "refund_id": str(refund_id)},
            )
            return False
        restocked = False
        for product_id, quantity in sorted(lines):
            if not await self.reservations.restock_line(order_id, product_id, quantity):
                logger.warning(
                    "refund line not restocked: more units than the order has sold",
                    extra={"order_id": str(order_id), "product_id": str(product_id)},
                )
                continue
            if not await self.stock.return_sold(product_id, quantity, now):
                await self._inconsistent(order_id, product_id, "sold")
            restocked = True
        return restocked

    async def release_expired(self, now: datetime, limit: int) -> tuple[int, int]:
        """Release up to `limit` reservations that expired by `now`, one transaction each;
        returns how many were found and how many this call released (a commit or release
        that got there first wins)."""
        order_ids = await self.reservations.expired_order_ids(now, limit)
        await self.session.rollback()
        released = 0
        for order_id in order_ids:
            changed_at = utcnow()
            if await self.reservations.change_status(
                order_id,
                expected=ReservationStatus.RESERVED,
                new=ReservationStatus.RELEASED,
                reason=EXPIRED,
                now=changed_at,
                expired_by=now,
            ):
                await self._give_back(order_id, changed_at, held=True)
                await self.session.commit()
                count_reservation("expired", EXPIRED)
                released += 1
            else:
                await self.session.rollback()
        return len(order_ids), released

    async def _lines(self, order_id: uuid.UUID) -> list[ReservationLine]:
        # Already stored in product id order; sorted again so the lock order never
        # depends on how a query happens to return rows.
        lines = await self.reservations.lines(order_id)
        return sorted(lines, key=lambda line: line.product_id)

    async def _give_back(self, order_id: uuid.UUID, now: datetime, *, held: bool) -> None:
        """Held units back to available, or (not `held`) the units still sold: those a
        refund put back on sale already are not given twice."""
        give_back = self.stock.return_reserved if held else self.stock.return_sold
        for line in await self._lines(order_id):
            quantity = line.quantity if held else line.quantity - line.restocked
            if quantity == 0:
                continue
            if not await give_back(line.product_id, quantity, now):
                await self._inconsistent(order_id, line.product_id, "reserved" if held else "sold")

    async def _inconsistent(self, order_id: uuid.UUID, product_id: uuid.UUID, column: str) -> None:
        await self.session.rollback()
        logger.error(
            "stock does not match the reservation",
            extra={"order_id": str(order_id), "product_id": str(product_id), "column": column},
        )
        raise StockInconsistent(
            f"product {product_id} has fewer {column} units than order {order_id} holds"
        )
