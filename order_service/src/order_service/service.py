"""The order service's use cases: what the routes call.

Idempotency-Key policy for placing an order (Stripe semantics, IETF httpapi draft):

* The request is validated and priced from the catalog first; nothing is written for a
  request refused there (422, or 503/504 when the catalog is down), so its key stays
  unused and the client may retry with it.
* Then the key is claimed (`in_progress`) by an INSERT in the transaction that inserts
  the `pending` order; the primary key (user_id, key) lets exactly one of any number of
  concurrent requests claim it (never a read followed by a write).
* The answer is stored (`completed`) in the same transaction that settles the order
  (`confirmed`, or `cancelled` with its reason), so a replay always tells what happened.
  The same key with the same body replays it (status and body) and creates nothing.
* The same key with another body is a 422; while the first request runs, a 409.
* A request that fails after its order exists (503/504 from inventory, an unexpected
  error) gives its claim up: the row is deleted, so the client can retry with the same
  key. The order it leaves `pending` is never confirmed by anyone; the sweep cancels
  it (`expired`) and gives back its stock and payment.
* A claim left `in_progress` by a crashed process is deleted by the sweep once the
  order it was creating would have been expired.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from order_service.clients import Catalog, Inventory
from order_service.domain.checkout import CheckoutSaga, Compensator
from order_service.domain.pricing import PricedOrder
from order_service.domain.states import CANCELLABLE, CancelReason, OrderStatus, sources_of
from order_service.errors import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    OrderNotFound,
    OrderStatusConflict,
)
from order_service.events import stage_order_event
from order_service.metrics import count_order
from order_service.models import IdempotencyState, OrderTimelineEntry, PurchaseOrder
from order_service.payments import PaymentProvider
from order_service.repository import IdempotencyRepository, OrderRepository
from order_service.schemas import OrderCreate, OrderRead
from shared.auth import TokenClaims
from shared.schemas import Page, PageParams

logger = logging.getLogger(__name__)

#: A claim found deleted between our INSERT and our read is tried again this often.
_CLAIM_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The answer to POST /v1/orders: sent now, or replayed from an earlier request."""

    status_code: int
    body: Any
    replayed: bool = False


class OrderService:
    def __init__(
        self,
        session: AsyncSession,
        catalog: Catalog,
        inventory: Inventory,
        payments: PaymentProvider,
    ) -> None:
        self.session = session
        self.orders = OrderRepository(session)
        self.keys = IdempotencyRepository(session)
        self.payments = payments
        self.saga = CheckoutSaga(session, catalog, inventory, payments)
        self.compensator = Compensator(session, inventory, payments)

    async def place(self, user_id: uuid.UUID, key: str, data: OrderCreate) -> PlacedOrder:
        """Place an order once per (user, Idempotency-Key); see the module's policy."""
        self.payments.check_token(data.payment_token)  # before any side effect
        priced = await self.saga.price(data.requested_lines())
        order_id = uuid.uuid4()
        address = data.shipping_address.model_dump() if data.shipping_address else None
        replay = await self._claim_and_create(
            user_id, key, data.fingerprint(), order_id, priced, address
        )
        if replay is not None:
            return replay

        answer: dict[str, Any] = {}

        async def store_answer(order: PurchaseOrder) -> None:
            answer["body"] = OrderRead.model_validate(order).model_dump(mode="json")
            await self.keys.complete(user_id, key, order_id, 201, answer["body"])

        try:
            await self.saga.complete(order_id, priced, data.payment_token, store_answer)
        except Exception:
            await self._give_up_claim(user_id, key, order_id)
            raise
        return PlacedOrder(201, answer["body"])

    async def _claim_and_create(
        self,
        user_id: uuid.UUID,
        key: str,
        fingerprint: str,
        order_id: uuid.UUID,
        priced: PricedOrder,
        shipping_address: dict[str, Any] | None,
    ) -> PlacedOrder | None:
        """Claim the key and insert the pending order in one transaction (None), or
        answer from the request that holds the key."""
        for _ in range(_CLAIM_ATTEMPTS):
            if await self.keys.claim(user_id, key, fingerprint, order_id):
                await self.saga.create(order_id, user_id, priced, shipping_address)
                await self.session.commit()
                return None
            existing = await self.keys.get(user_id, key)
            await self.session.commit()
            if existing is None:
                continue  # given up between our INSERT and this read: claim it again
            if existing.request_fingerprint != fingerprint:
                raise IdempotencyKeyReused()
            if existing.state is IdempotencyState.IN_PROGRESS:
                raise IdempotencyKeyInProgress()
            assert existing.response_status is not None
            return PlacedOrder(existing.response_status, existing.response_body, replayed=True)
        raise IdempotencyKeyInProgress()

    async def _give_up_claim(self, user_id: uuid.UUID, key: str, order_id: uuid.UUID) -> None:
        try:
            await self.session.rollback()
            await self.keys.release(user_id, key, order_id)
            await self.session.commit()
        except Exception:
            # The database is failing too; the sweep forgets the claim later.
            logger.exception("could not give up an idempotency claim", extra={"key": key})

    async def page(
        self, claims: TokenClaims, status: OrderStatus | None, page: PageParams
    ) -> Page[OrderRead]:
        """A customer's own orders, or everyone's for an administrator; newest first."""
        found = await self.orders.page(
            user_id=None if claims.is_admin else claims.user_id, status=status, page=page
        )
        return found.to_page(OrderRead, page.limit)

    async def get_visible(self, order_id: uuid.UUID, claims: TokenClaims) -> PurchaseOrder:
        """The order, if the caller owns it or is an administrator; 404 otherwise (an
        order of someone else's is not even admitted to exist)."""
        order = await self.orders.get(order_id)
        # End the read transaction: on SQLite one that has read cannot later write if
        # another connection wrote in between.
        await self.session.commit()
        if order is None or not (claims.is_admin or order.user_id == claims.user_id):
            raise OrderNotFound(order_id)
        return order

    async def timeline(self, order: PurchaseOrder) -> Sequence[OrderTimelineEntry]:
        entries = await self.orders.timeline(order.id)
        await self.session.commit()
        return entries

    async def cancel(self, order: PurchaseOrder) -> PurchaseOrder:
        """Cancel a pending or confirmed order and give back its stock and payment;
        an order cancelled already is answered as it is."""
        cancelled = await self.orders.transition(
            order.id,
            to=OrderStatus.CANCELLED,
            sources=CANCELLABLE,
            cancel_reason=CancelReason.CANCELLED_BY_USER,
            compensation_pending=True,
        )
        if cancelled is None:
            current = await self._current(order.id)
            if current.status is OrderStatus.CANCELLED:
                return current
            raise OrderStatusConflict(order.id, current.status, "cancelled")
        await stage_order_event(self.session, cancelled)
        await self.session.commit()
        count_order(OrderStatus.CANCELLED, CancelReason.CANCELLED_BY_USER)
        # When inventory is down the order is cancelled all the same; the sweep gives
        # the stock back once it answers again.
        await self.compensator.give_back(order.id, CancelReason.CANCELLED_BY_USER.value)
        return cancelled

    async def ship(self, order_id: uuid.UUID) -> PurchaseOrder:
        return await self._advance(order_id, OrderStatus.SHIPPED, "shipped")

    async def deliver(self, order_id: uuid.UUID) -> PurchaseOrder:
        return await self._advance(order_id, OrderStatus.DELIVERED, "delivered")

    async def _advance(self, order_id: uuid.UUID, to: OrderStatus, action: str) -> PurchaseOrder:
        order = await self.orders.transition(order_id, to=to, sources=sources_of(to))
        if order is None:
            current = await self._current(order_id)
            raise OrderStatusConflict(order_id, current.status, action)
        await stage_order_event(self.session, order)
        await self.session.commit()
        count_order(to)
        return order

    async def _current(self, order_id: uuid.UUID) -> PurchaseOrder:
        order = await self.orders.get(order_id)
        await self.session.commit()
        if order is None:
            raise OrderNotFound(order_id)
        return order
