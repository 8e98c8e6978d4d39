"""The checkout saga: how an order is placed across the catalog, inventory and payments.

    1. price the lines from the catalog                       (nothing durable yet)
    2. insert the order `pending`, with its lines             -> committed with the
                                                                 Idempotency-Key claim
    3. charge the payment provider                            declined: cancelled/payment_declined
    4. take the stock at inventory_service, sold at once      short: cancelled/out_of_stock,
                                                                 the payment refunded
    5. `pending` -> `confirmed`

Each step commits before the next network call, so no database transaction is ever held
open while another service is asked something. Steps 2 and 5 are one statement each on
PostgreSQL (`OrderRepository.create_claimed`, `settle_pending`): a round trip apiece.
Each outcome is written with a conditional UPDATE from `pending`; when that finds the
order no longer pending (the customer cancelled it meanwhile, or the sweep expired it)
the saga gives back what it took and answers with the order as it is.

The payment comes before the stock. A paid order's units go from available to sold in
the one call that takes them (inventory's reservation is `committed` at once): one call
to inventory per order instead of a reservation and its commit, no held stock that could
expire between the two, and a declined payment, the usual way a checkout fails, never
touches the stock at all. Short stock, the rarer failure, refunds the payment instead.

Compensation (stock back, payment refunded) follows every cancellation of an order that
may hold stock or payment. It is recorded as owed (`compensation_pending`) in the same
UPDATE that cancels, and cleared once done; if inventory is unreachable it is left
owed and the sweep retries it.

When a dependency fails part-way (503/504, or anything unexpected) the saga leaves the
order `pending` and lets the error through at once; giving back what it can (best
effort) runs after that answer, in the background and outside the request's time budget,
so a hung inventory costs the caller one timeout, not two. None of the contract's cancel
reasons describes "a dependency failed", so such an order is never confirmed by anyone
and the sweep cancels it as `expired` once its reservation's TTL has passed, giving back
stock and payment again (both idempotent).
Stock sold to an order that never settles goes back when the sweep expires the order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from order_service.errors import CheckoutsBusy
from order_service.events import order_event_row, stage_order_event
from order_service.inventory_client import InventoryClient, Reservation
from order_service.metrics import count_order, timed_step
from order_service.models import PurchaseOrder
from order_service.payments import PaymentProvider
from order_service.pricing import PricedOrder, RequestedLine, price_order
from order_service.product_client import ProductClient
from order_service.repository import IdempotencyRepository, OrderRepository
from order_service.states import CancelReason, OrderStatus
from shared import deadline
from shared.db import utcnow
from shared.errors import ProblemError

logger = logging.getLogger(__name__)

#: The release reason inventory records when a failed checkout gives its stock back.
CHECKOUT_FAILED = "checkout_failed"

#: Called with the settled order inside the transaction that settles it (the
#: Idempotency-Key's answer is stored there, so it always matches the order).
OnSettled = Callable[[PurchaseOrder], Awaitable[None]]


class Compensator:
    """Gives back what an order took: its stock at inventory and its payment. One per
    process (made in the lifespan): the checkout, a cancellation and the sweep share it."""

    def __init__(self, inventory: InventoryClient, payments: PaymentProvider) -> None:
        self.inventory = inventory
        self.payments = payments
        #: Compensations running after their request's answer (the loop keeps only weak
        #: references to tasks).
        self._later: set[asyncio.Task[None]] = set()

    async def give_back(self, session: AsyncSession, order_id: uuid.UUID, reason: str) -> bool:
        """Release the order's stock and refund its payment, then clear its debt
        (`compensation_pending`) in `session`; False, with the debt left for the sweep,
        when a dependency could not be reached."""
        try:
            await self.release_and_refund(order_id, reason)
        except ProblemError as error:
            logger.warning(
                "compensation postponed",
                extra={"order_id": str(order_id), "reason": reason, "error": str(error)},
            )
            return False
        await OrderRepository(session).set_values(order_id, compensation_pending=False)
        await session.commit()
        return True

    async def release_and_refund(self, order_id: uuid.UUID, reason: str) -> None:
        """Release and refund (both idempotent), raising when a dependency fails."""
        with timed_step("release_stock"):
            await self.inventory.release(order_id, reason)
        with timed_step("refund_payment"):
            await self.payments.refund(order_id=order_id)

    def best_effort_later(self, order_id: uuid.UUID, reason: str) -> None:
        """`best_effort` in the background: after the answer, not before it."""

        async def give_back() -> None:
            deadline.detached()
            await self.best_effort(order_id, reason)

        task = asyncio.create_task(give_back(), name=f"compensate-{order_id}")
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def best_effort(self, order_id: uuid.UUID, reason: str) -> None:
        """Release and refund now if possible; whatever fails is left to the sweep."""
        try:
            await self.release_and_refund(order_id, reason)
        except Exception as error:
            logger.warning(
                "immediate compensation failed; the sweep will repeat it",
                extra={"order_id": str(order_id), "error": str(error)},
            )


class CheckoutLimit:
    """At most `limit` checkouts run at once in this process; the others wait for a
    turn, first come first served, while their time budget allows.

    Without it every request admitted shares the cores with all the others: past what
    the machine sustains each checkout slows down with every new one, until they all
    outlive their callers' timeouts together (at 256 connections on two cores, 9 of
    59 answers a second were orders, the rest timeouts and open breakers). Queued
    here, the checkouts in progress keep their pace and a waiting one starts with
    its budget nearly whole."""

    #: A request stops waiting for a turn when less of its budget is left than this: a
    #: checkout started then would time out half-way, leaving an order to expire.
    MIN_SECONDS_TO_START = 1.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a place among the running checkouts; 503 (`CheckoutsBusy`) when none
        frees up while the request still has time to check out."""
        left = deadline.remaining()
        wait = None if left is None else max(0.0, left - self.MIN_SECONDS_TO_START)
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise CheckoutsBusy() from None
        try:
            yield
        finally:
            self._slots.release()


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling an order writes besides the order, in the same transaction."""

    #: The Idempotency-Key of the request placing the order (its customer's).
    key: str
    #: The answer stored for the key: the settled order's body.
    answer: Callable[[PurchaseOrder], Any]
    #: More changes when the order is confirmed (a cart's lines taken out): these need
    #: the session, so the order is then settled by a transaction of several statements.
    on_confirmed: OnSettled | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Where the dependency steps left the order."""

    status: OrderStatus
    cancel_reason: CancelReason | None = None
    #: Stock or payment may be held and must be given back.
    compensate: bool = False
    payment_id: str | None = None


def _settled(pending: PurchaseOrder, outcome: _Outcome) -> PurchaseOrder:
    """The `pending` order (as this checkout wrote it) once `outcome` settles it: while
    it is pending nothing else changes it, so this is what the settling UPDATE makes."""
    pending.status = outcome.status
    pending.cancel_reason = outcome.cancel_reason
    pending.payment_id = outcome.payment_id
    pending.compensation_pending = outcome.compensate
    pending.updated_at = utcnow()
    return pending


class CheckoutSaga:
    def __init__(
        self,
        session: AsyncSession,
        catalog: ProductClient,
        inventory: InventoryClient,
        payments: PaymentProvider,
        compensator: Compensator,
    ) -> None:
        self.session = session
        self.orders = OrderRepository(session)
        self.catalog = catalog
        self.inventory = inventory
        self.payments = payments
        self.compensator = compensator

    async def price(self, lines: list[RequestedLine]) -> PricedOrder:
        """Step 1: the lines at the catalog's prices. Raises, with nothing created, for
        an unknown or inactive product (422), an unreachable catalog (503/504), or
        while inventory's circuit is open (503)."""
        with timed_step("load_products"):
            catalog = await self.catalog.get_products(line.product_id for line in lines)
        priced = price_order(lines, catalog)
        self.inventory.raise_if_circuit_open()
        return priced

    async def create(self, order: PurchaseOrder, key: str, fingerprint: str) -> bool:
        """Step 2: insert the `pending` order (from `pending_order`) with its event, in
        the transaction that claims its customer's Idempotency-Key; False, nothing
        written, when the key was claimed before."""
        with timed_step("create_order"):
            event = order_event_row(order)
            return await self.orders.create_claimed(key, fingerprint, order, event)

    async def complete(
        self, order: PurchaseOrder, payment_token: str, settlement: Settlement
    ) -> PurchaseOrder:
        """Steps 3 to 5 for the committed `pending` order; returns it settled
        (`confirmed` or `cancelled`). When a dependency fails this raises, leaving the
        order `pending` (see the module)."""
        count_order(OrderStatus.PENDING)
        try:
            outcome = await self._charge_and_take(
                order.id,
                [(line.product_id, line.quantity) for line in order.lines],
                order.total_amount,
                order.currency,
                payment_token,
            )
        except Exception:
            self.compensator.best_effort_later(order.id, CHECKOUT_FAILED)
            raise
        return await self._settle(order, outcome, settlement)

    async def _charge_and_take(
        self,
        order_id: uuid.UUID,
        lines: list[tuple[uuid.UUID, int]],
        amount: Decimal,
        currency: str,
        payment_token: str,
    ) -> _Outcome:
        with timed_step("charge_payment"):
            payment = await self.payments.charge(
                order_id=order_id, amount=amount, currency=currency, token=payment_token
            )
        if not payment.approved:
            # Nothing was taken: no stock to give back, no payment to refund.
            return _Outcome(OrderStatus.CANCELLED, CancelReason.PAYMENT_DECLINED)
        paid = payment.payment_id

        with timed_step("take_stock"):
            taken = (await self.inventory.sell(order_id, lines)).result
        if taken is Reservation.INSUFFICIENT:
            return _Outcome(
                OrderStatus.CANCELLED, CancelReason.OUT_OF_STOCK, compensate=True, payment_id=paid
            )
        if taken is not Reservation.COMMITTED:
            # Released already: only a concurrent cancellation or expiry does that.
            return _Outcome(
                OrderStatus.CANCELLED, CancelReason.EXPIRED, compensate=True, payment_id=paid
            )
        return _Outcome(OrderStatus.CONFIRMED, payment_id=paid)

    async def _settle(
        self, pending: PurchaseOrder, outcome: _Outcome, settlement: Settlement
    ) -> PurchaseOrder:
        if settlement.on_confirmed is not None:
            # A cart's lines go with the order: statements of the session's own.
            return await self._settle_as_found(pending.id, outcome, settlement)
        settled = _settled(pending, outcome)
        with timed_step("settle_order"):
            written = await self.orders.settle_pending(
                settled, order_event_row(settled), settlement.key, settlement.answer(settled)
            )
        if not written:
            # Settled by someone else meanwhile: the order as the database has it.
            return await self._settle_as_found(pending.id, outcome, settlement)
        count_order(outcome.status, outcome.cancel_reason)
        if outcome.compensate:
            reason = (settled.cancel_reason or CancelReason.EXPIRED).value
            await self.compensator.give_back(self.session, settled.id, reason)
        return settled

    async def _settle_as_found(
        self, order_id: uuid.UUID, outcome: _Outcome, settlement: Settlement
    ) -> PurchaseOrder:
        with timed_step("settle_order"):
            order = await self.orders.transition(
                order_id,
                to=outcome.status,
                sources={OrderStatus.PENDING},
                cancel_reason=outcome.cancel_reason,
                compensation_pending=outcome.compensate,
                payment_id=outcome.payment_id,
            )
            settled_here = order is not None
            if order is not None:
                await stage_order_event(self.session, order)
            else:
                # Someone settled it first: the customer cancelled, or the sweep expired
                # it. Whatever this saga took meanwhile must go back, so the debt is
                # recorded again (their compensation may have run before this took it).
                order = await self.orders.get(order_id)
                if order is None:  # pragma: no cover - orders are never deleted
                    raise RuntimeError(f"order {order_id} vanished during checkout")
                if order.status is OrderStatus.CANCELLED:
                    await self.orders.set_values(order_id, compensation_pending=True)
            if settlement.on_confirmed is not None and order.status is OrderStatus.CONFIRMED:
                await settlement.on_confirmed(order)
            await IdempotencyRepository(self.session).complete(
                order.user_id, settlement.key, order.id, 201, settlement.answer(order)
            )
            await self.session.commit()
        if settled_here:
            count_order(outcome.status, outcome.cancel_reason)
        if order.status is OrderStatus.CANCELLED and (outcome.compensate or not settled_here):
            reason = (order.cancel_reason or CancelReason.EXPIRED).value
            await self.compensator.give_back(self.session, order_id, reason)
        return order
