"""Crash repair: the background sweep of abandoned checkouts.

A task in each process (`ServiceBuilder.add_sweeper`) runs every `ORDER_SWEEP_SECONDS`:

1. An order still `pending` after the reservation TTL plus a grace period was abandoned
   (its checkout failed or its process died half-way; a running checkout never takes
   that long, since inventory would already have expired its reservation). It is
   cancelled as `expired`, and its stock and payment are given back.
2. A cancelled order whose compensation could not be done at once (inventory was down)
   gets it retried.
3. A refund whose money the provider could not pay back at once is paid back.
4. Idempotency keys left `in_progress` by a crash are forgotten, and answers past their
   retention are deleted.

Several processes may sweep at once: each cancellation is a conditional UPDATE from
`pending` (one wins), and releases and refunds are idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from order_service.checkout import Compensator
from order_service.config import Settings
from order_service.events import stage_order_event
from order_service.metrics import count_order
from order_service.repository import IdempotencyRepository, OrderRepository, RefundRepository
from order_service.service import RefundService
from order_service.states import CancelReason, OrderStatus
from shared.db import Database, utcnow
from shared.sweeps import SweepReport

logger = logging.getLogger(__name__)

BATCH_SIZE = 100


@dataclass
class OrderSweepReport(SweepReport):
    expired: int = 0
    compensated: int = 0
    refunds_paid: int = 0
    keys_deleted: int = 0


class Sweeper:
    def __init__(self, database: Database, compensator: Compensator, settings: Settings) -> None:
        self.database = database
        self.compensator = compensator
        self.payments = compensator.payments
        self.settings = settings

    async def sweep(self, now: datetime | None = None) -> OrderSweepReport:
        """One pass over everything that needs repair at `now` (default: this instant)."""
        now = now or utcnow()
        report = OrderSweepReport()
        report.expired = await self._expire_abandoned(
            now - timedelta(seconds=self.settings.pending_order_timeout_seconds)
        )
        report.compensated = await self._finish_compensations(
            now - timedelta(seconds=self.settings.order_sweep_seconds)
        )
        report.refunds_paid = await self._pay_unpaid_refunds(
            now - timedelta(seconds=self.settings.order_sweep_seconds)
        )
        async with self.database.sessionmaker() as session:
            report.keys_deleted = await IdempotencyRepository(session).delete_stale(
                in_progress_before=now
                - timedelta(seconds=self.settings.pending_order_timeout_seconds),
                completed_before=now
                - timedelta(hours=self.settings.idempotency_key_retention_hours),
            )
            await session.commit()
        return report

    async def _expire_abandoned(self, cutoff: datetime) -> int:
        expired = 0
        while True:
            async with self.database.sessionmaker() as session:
                orders = OrderRepository(session)
                order_ids = await orders.pending_before(cutoff, BATCH_SIZE)
                await session.commit()
                for order_id in order_ids:
                    order = await orders.transition(
                        order_id,
                        to=OrderStatus.CANCELLED,
                        sources={OrderStatus.PENDING},
                        cancel_reason=CancelReason.EXPIRED,
                        compensation_pending=True,
                    )
                    if order is not None:
                        await stage_order_event(session, order)
                    await session.commit()
                    if order is None:
                        continue  # its checkout settled it meanwhile
                    expired += 1
                    count_order(OrderStatus.CANCELLED, CancelReason.EXPIRED)
                    logger.info("abandoned order expired", extra={"order_id": str(order_id)})
                    await self.compensator.give_back(session, order_id, CancelReason.EXPIRED.value)
            # Every order found has left `pending`, here or elsewhere, so this ends.
            if len(order_ids) < BATCH_SIZE:
                return expired

    async def _finish_compensations(self, before: datetime) -> int:
        async with self.database.sessionmaker() as session:
            orders = OrderRepository(session)
            order_ids = await orders.awaiting_compensation(before, BATCH_SIZE)
            await session.commit()
            done = 0
            for order_id in order_ids:
                order = await orders.get(order_id)
                await session.commit()
                if order is None or not order.compensation_pending:
                    continue
                reason = (order.cancel_reason or CancelReason.EXPIRED).value
                if not await self.compensator.give_back(session, order_id, reason):
                    break  # inventory is still down: try again next time
                done += 1
            return done

    async def _pay_unpaid_refunds(self, before: datetime) -> int:
        async with self.database.sessionmaker() as session:
            refunds = await RefundRepository(session).unpaid(before, BATCH_SIZE)
            currencies = await OrderRepository(session).currencies(
                {refund.order_id for refund in refunds}
            )
            await session.commit()
            paid = 0
            service = RefundService(session, self.payments)
            for refund in refunds:
                if not await service.pay_back(refund, currencies[refund.order_id]):
                    break  # the provider is still down: try again next time
                paid += 1
            return paid
