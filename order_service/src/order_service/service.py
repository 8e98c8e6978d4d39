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

Refunds (`RefundService`) take a key by the same rules, from the same table: keys are
one namespace per user, as Stripe's are per account, so a key that placed an order is a
422 on a refund. A refund's claim is held while the refund is recorded and paid back,
then deleted: from then on the refund's own row, unique per (administrator, key), is
the answer a retry replays.

POST /v1/cart/checkout is this same checkout (`OrderService.checkout`) with the cart's
lines; only its fingerprint differs (the checkout body, marked as a cart's), and a key
already answered is replayed before the cart is read, since a confirmed checkout has
emptied it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from order_service.checkout import (
    CheckoutLimit,
    CheckoutSaga,
    Compensator,
    OnSettled,
    Settlement,
)
from order_service.errors import (
    CartEmpty,
    CartFull,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    OrderHasRefunds,
    OrderNotFound,
    OrderStatusConflict,
    ProductUnavailable,
    RefundExceedsOrder,
    field_error,
)
from order_service.events import stage_order_event, stage_refund_event
from order_service.inventory_client import InventoryClient
from order_service.metrics import count_order
from order_service.models import (
    IdempotencyKey,
    IdempotencyState,
    OrderTimelineEntry,
    PurchaseOrder,
    Refund,
    RefundLine,
)
from order_service.payments import PaymentProvider
from order_service.pricing import CENT, RequestedLine
from order_service.product_client import ProductClient
from order_service.repository import (
    CartRepository,
    IdempotencyRepository,
    OrderRepository,
    RefundRepository,
    pending_order,
)
from order_service.schemas import (
    MAX_LINES,
    CartCheckout,
    CartLineRead,
    CartRead,
    OrderCreate,
    OrderRead,
    RefundCreate,
    RefundRead,
    ShippingAddress,
)
from order_service.states import (
    CANCELLABLE,
    REFUNDABLE,
    CancelReason,
    OrderStatus,
    TimelineEvent,
    sources_of,
)
from shared.auth import TokenClaims
from shared.db import is_unique_violation, utcnow
from shared.errors import ProblemError
from shared.schemas import Page, PageParams

logger = logging.getLogger(__name__)

#: A claim found deleted between our INSERT and our read is tried again this often.
_CLAIM_ATTEMPTS = 3
ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The answer to POST /v1/orders: sent now, or replayed from an earlier request."""

    status_code: int
    body: Any
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What a checkout orders, from POST /v1/orders or from the cart."""

    lines: list[RequestedLine]
    payment_token: str
    shipping_address: ShippingAddress | None
    #: What makes two requests with one Idempotency-Key "the same" (`schemas.fingerprint`).
    fingerprint: str


async def _release_claim(
    session: AsyncSession, user_id: uuid.UUID, key: str, order_id: uuid.UUID
) -> None:
    """Give up a claim on an Idempotency-Key (the request that held it has finished
    or failed), so that a retry with the key is not a 409 until the sweep."""
    try:
        await session.rollback()
        await IdempotencyRepository(session).release(user_id, key, order_id)
        await session.commit()
    except Exception:
        # The database is failing too; the sweep forgets the claim later.
        logger.exception("could not give up an idempotency claim", extra={"key": key})


def _answer_of(existing: IdempotencyKey, fingerprint: str) -> PlacedOrder:
    """The answer for a request whose key `existing` holds."""
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    if existing.state is IdempotencyState.IN_PROGRESS:
        raise IdempotencyKeyInProgress()
    assert existing.response_status is not None
    return PlacedOrder(existing.response_status, existing.response_body, replayed=True)


class OrderService:
    def __init__(
        self,
        session: AsyncSession,
        catalog: ProductClient,
        inventory: InventoryClient,
        payments: PaymentProvider,
        compensator: Compensator,
        checkout_limit: CheckoutLimit,
    ) -> None:
        self.session = session
        self.orders = OrderRepository(session)
        self.keys = IdempotencyRepository(session)
        self.checkout_limit = checkout_limit
        self.payments = payments
        self.saga = CheckoutSaga(session, catalog, inventory, payments, compensator)
        self.compensator = compensator

    async def place(self, user_id: uuid.UUID, key: str, data: OrderCreate) -> PlacedOrder:
        """POST /v1/orders: place the order in the body (see `checkout`)."""
        return await self.checkout(
            user_id,
            key,
            CheckoutRequest(
                lines=data.requested_lines(),
                payment_token=data.payment_token,
                shipping_address=data.shipping_address,
                fingerprint=data.fingerprint(),
            ),
        )

    async def checkout(
        self,
        user_id: uuid.UUID,
        key: str,
        request: CheckoutRequest,
        on_confirmed: OnSettled | None = None,
    ) -> PlacedOrder:
        """Place an order once per (user, Idempotency-Key); see the module's policy.
        `on_confirmed` runs in the transaction that confirms the order."""
        self.payments.check_token(request.payment_token)  # before any side effect
        async with self.checkout_limit.turn():
            return await self._checkout(user_id, key, request, on_confirmed)

    async def _checkout(
        self,
        user_id: uuid.UUID,
        key: str,
        request: CheckoutRequest,
        on_confirmed: OnSettled | None,
    ) -> PlacedOrder:
        priced = await self.saga.price(request.lines)
        address = request.shipping_address.model_dump() if request.shipping_address else None
        order = pending_order(uuid.uuid4(), user_id, priced, address)
        replay = await self._claim_and_create(user_id, key, request.fingerprint, order)
        if replay is not None:
            return replay

        answer: dict[str, Any] = {}

        def body_of(settled: PurchaseOrder) -> Any:
            answer["body"] = OrderRead.model_validate(settled).model_dump(mode="json")
            return answer["body"]

        try:
            await self.saga.complete(
                order, request.payment_token, Settlement(key, body_of, on_confirmed)
            )
        except Exception:
            await _release_claim(self.session, user_id, key, order.id)
            raise
        return PlacedOrder(201, answer["body"])

    async def replay(self, user_id: uuid.UUID, key: str, fingerprint: str) -> PlacedOrder | None:
        """The answer of an earlier request with this key (raising as `checkout` does
        for another body or one still running), or None when the key is unused."""
        existing = await self.keys.get(user_id, key)
        await self.session.commit()
        return None if existing is None else _answer_of(existing, fingerprint)

    async def _claim_and_create(
        self, user_id: uuid.UUID, key: str, fingerprint: str, order: PurchaseOrder
    ) -> PlacedOrder | None:
        """Claim the key and insert the pending order in one transaction (None), or
        answer from the request that holds the key."""
        for _ in range(_CLAIM_ATTEMPTS):
            if await self.saga.create(order, key, fingerprint):
                return None
            existing = await self.keys.get(user_id, key)
            await self.session.commit()
            if existing is None:
                continue  # given up between our INSERT and this read: claim it again
            return _answer_of(existing, fingerprint)
        raise IdempotencyKeyInProgress()

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
            # Cancelling gives back all the stock and money: after a refund gave back
            # some, that would give it twice. The row lock orders this against refunds.
            conditions=[PurchaseOrder.refunded_amount == 0],
            compensation_pending=True,
        )
        if cancelled is None:
            current = await self._current(order.id)
            if current.status is OrderStatus.CANCELLED:
                return current
            if current.status in CANCELLABLE and current.refunded_amount > 0:
                raise OrderHasRefunds(order.id)
            raise OrderStatusConflict(order.id, current.status, "cancelled")
        await stage_order_event(self.session, cancelled)
        await self.session.commit()
        count_order(OrderStatus.CANCELLED, CancelReason.CANCELLED_BY_USER)
        # When inventory is down the order is cancelled all the same; the sweep gives
        # the stock back once it answers again.
        await self.compensator.give_back(
            self.session, order.id, CancelReason.CANCELLED_BY_USER.value
        )
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


class CartService:
    """A customer's cart: its lines are stored here; names, prices and stock are read
    live from the catalog and inventory, one call each however many lines it has."""

    def __init__(
        self,
        session: AsyncSession,
        catalog: ProductClient,
        inventory: InventoryClient,
        orders: OrderService,
    ) -> None:
        self.session = session
        self.carts = CartRepository(session)
        self.catalog = catalog
        self.inventory = inventory
        self.orders = orders

    async def view(self, user_id: uuid.UUID) -> CartRead:
        """The cart at the catalog's current names and prices, with the stock available
        now (null while inventory does not answer: the cart shows all the same)."""
        cart = await self.carts.get(user_id)
        lines = await self.carts.lines(user_id)
        await self.session.commit()
        updated_at = cart.updated_at if cart is not None else None
        if not lines:
            return CartRead(items=[], total_amount=ZERO, currency=None, updated_at=updated_at)
        product_ids = [line.product_id for line in lines]
        products = await self.catalog.get_products(product_ids)
        available = await self._available(product_ids)
        items: list[CartLineRead] = []
        currencies: list[str] = []
        for line in lines:
            product = products.get(line.product_id)
            if product is None:
                continue  # the catalog never deletes a product; nothing to show for it
            unit_price = product.price.quantize(CENT)
            items.append(
                CartLineRead(
                    product_id=line.product_id,
                    product_name=product.name,
                    unit_price=unit_price,
                    quantity=line.quantity,
                    line_total=unit_price * line.quantity,
                    available=None
                    if available is None
                    else (available.get(line.product_id, 0) if product.is_active else 0),
                )
            )
            currencies.append(product.currency)
        return CartRead(
            items=items,
            total_amount=sum((item.line_total for item in items), ZERO),
            currency=currencies[0] if currencies else None,
            updated_at=updated_at,
        )

    async def _available(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, int] | None:
        try:
            return await self.inventory.available(product_ids)
        except ProblemError as error:
            logger.warning("cart shown without stock levels", extra={"error": str(error)})
            return None

    async def set_line(self, user_id: uuid.UUID, product_id: uuid.UUID, quantity: int) -> CartRead:
        """Put `quantity` units of a product in the cart (replacing what was there):
        422 for a product not sold, 409 for a 51st line."""
        product = (await self.catalog.get_products([product_id])).get(product_id)
        if product is None or not product.is_active:
            reason = "no such product" if product is None else "the product is no longer sold"
            raise ProductUnavailable(
                [field_error(["path", "product_id"], reason, "product_unavailable")]
            )
        now = utcnow()
        await self.carts.lock(user_id, now)
        if not await self.carts.set_quantity(user_id, product_id, quantity, now):
            # Counted under the cart's lock: no concurrent request can add a line meanwhile.
            if await self.carts.count(user_id) >= MAX_LINES:
                await self.session.rollback()
                raise CartFull(MAX_LINES)
            await self.carts.add_line(user_id, product_id, quantity, now)
        await self.session.commit()
        return await self.view(user_id)

    async def remove_line(self, user_id: uuid.UUID, product_id: uuid.UUID) -> CartRead:
        """Take a product out of the cart; a product not in it changes nothing."""
        if await self.carts.remove_line(user_id, product_id):
            await self.carts.lock(user_id, utcnow())
            await self.session.commit()
        else:
            await self.session.rollback()
        return await self.view(user_id)

    async def clear(self, user_id: uuid.UUID) -> None:
        await self.carts.delete(user_id)
        await self.session.commit()

    async def checkout(self, user_id: uuid.UUID, key: str, data: CartCheckout) -> PlacedOrder:
        """Order the cart's lines through the one checkout of POST /v1/orders (same
        saga, same Idempotency-Key rules); a confirmed order takes its lines out of the
        cart in the transaction that confirms it, any other outcome leaves the cart."""
        fingerprint = data.fingerprint()
        # A retry after success finds the cart emptied: the key's answer comes first.
        replay = await self.orders.replay(user_id, key, fingerprint)
        if replay is not None:
            return replay
        lines = await self.carts.lines(user_id)
        await self.session.commit()
        if not lines:
            raise CartEmpty()

        async def empty_cart(order: PurchaseOrder) -> None:
            ordered = [(line.product_id, line.quantity) for line in order.lines]
            await self.carts.remove_ordered(user_id, ordered)
            await self.carts.lock(user_id, utcnow())

        request = CheckoutRequest(
            lines=[RequestedLine(line.product_id, line.quantity) for line in lines],
            payment_token=data.payment_token,
            shipping_address=data.shipping_address,
            fingerprint=fingerprint,
        )
        return await self.orders.checkout(user_id, key, request, on_confirmed=empty_cart)


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    refund: RefundRead
    replayed: bool = False


class RefundService:
    """Refunds, by line and quantity, of orders paid for.

    Idempotency-Key (as for placing orders, see the module): the key is claimed in a
    transaction of its own before anything else is written, so a request with the same
    key while the first is recorded or paid back is a 409 at once (not a wait for the
    first's locks); once the first has finished, a retry replays the refund (201, the
    same body) or, for another body, gets a 422. A refused request (409, 422) gives its
    claim up, so its key stays free.

    The money goes back after the commit (the provider is another system: no
    transaction spans both); a refund it could not pay yet is paid by the sweep."""

    def __init__(self, session: AsyncSession, payments: PaymentProvider) -> None:
        self.session = session
        self.orders = OrderRepository(session)
        self.refunds = RefundRepository(session)
        self.keys = IdempotencyRepository(session)
        self.payments = payments

    async def refund(
        self, order_id: uuid.UUID, requested_by: uuid.UUID, key: str, data: RefundCreate
    ) -> RefundAnswer:
        fingerprint = data.fingerprint(order_id)
        replay = await self._claim(requested_by, key, fingerprint, order_id)
        if replay is not None:
            return replay
        try:
            return await self._make(order_id, requested_by, key, data, fingerprint)
        finally:
            await _release_claim(self.session, requested_by, key, order_id)

    async def _claim(
        self, requested_by: uuid.UUID, key: str, fingerprint: str, order_id: uuid.UUID
    ) -> RefundAnswer | None:
        """Claim the key for this request (None), or answer from what holds it: the
        refund it made (a replay, or 422 for another body), a request still running
        (409), or another route's request (422)."""
        for _ in range(_CLAIM_ATTEMPTS):
            if await self.keys.claim(requested_by, key, fingerprint, order_id):
                await self.session.commit()
                return None
            holder = await self.keys.get(requested_by, key)
            await self.session.commit()
            if holder is None:
                continue  # released between our INSERT and this read: claim it again
            # A refund's claim is never completed, only released: a completed key
            # answered an order.
            if holder.state is IdempotencyState.COMPLETED or (
                holder.request_fingerprint != fingerprint
            ):
                raise IdempotencyKeyReused()
            raise IdempotencyKeyInProgress()
        raise IdempotencyKeyInProgress()

    async def _make(
        self,
        order_id: uuid.UUID,
        requested_by: uuid.UUID,
        key: str,
        data: RefundCreate,
        fingerprint: str,
    ) -> RefundAnswer:
        """Record the refund and pay it back, under this request's claim of its key;
        or replay the refund an earlier request with the key made."""
        existing = await self.refunds.by_key(requested_by, key)
        order = await self.orders.get(order_id) if existing is None else None
        await self.session.commit()
        if existing is not None:
            return _replayed_refund(existing, fingerprint)
        if order is None:
            raise OrderNotFound(order_id)
        bought = {line.product_id: (line.product_name, line.unit_price) for line in order.lines}
        refund = _new_refund(order, data, bought, requested_by, key, fingerprint)
        try:
            await self._record(order, refund, bought)
        except IntegrityError as error:
            await self.session.rollback()
            if not is_unique_violation(error):
                raise
            # Only when the claim was lost (the sweep forgot a claim held far too
            # long): the unique key still lets one refund in, and this one replays it.
            existing = await self.refunds.by_key(requested_by, key)
            await self.session.commit()
            if existing is None:  # pragma: no cover - refunds are never deleted
                raise IdempotencyKeyInProgress() from error
            return _replayed_refund(existing, fingerprint)
        await self.pay_back(refund, order.currency)
        return RefundAnswer(RefundRead.model_validate(refund))

    async def _record(
        self, order: PurchaseOrder, refund: Refund, bought: dict[uuid.UUID, tuple[str, Decimal]]
    ) -> None:
        """Insert the refund, count its units and amount on the order (conditional
        UPDATEs: the database settles concurrent refunds), record it on the timeline
        and stage `order.refunded`, all in one transaction."""
        if order.status not in REFUNDABLE:
            raise OrderStatusConflict(order.id, order.status, "refunded")
        await self.refunds.add(refund)
        # Lines in product id order, so two refunds of the same lines cannot deadlock.
        indexed = sorted(enumerate(refund.lines), key=lambda item: item[1].product_id)
        short = [
            index
            for index, line in indexed
            if not await self.orders.refund_units(order.id, line.product_id, line.quantity)
        ]
        if short:
            await self.session.rollback()
            raise RefundExceedsOrder(
                [
                    field_error(
                        ["body", "lines", index, "quantity"],
                        "more units than the order has left to refund",
                        "refund_exceeds_order",
                    )
                    for index in sorted(short)
                ]
            )
        changed = await self.orders.add_refunded(order.id, refund.amount, REFUNDABLE, utcnow())
        if changed is None:
            # Cancelled since it was read (refunds and cancellations lock its row).
            await self.session.rollback()
            current = await self.orders.get(order.id)
            await self.session.commit()
            status = current.status if current is not None else order.status
            raise OrderStatusConflict(order.id, status, "refunded")
        self.orders.add_timeline_entry(
            changed, TimelineEvent.REFUNDED, at=refund.created_at, detail=str(refund.id)
        )
        await stage_refund_event(self.session, changed, refund, bought)
        await self.session.commit()

    async def pay_back(self, refund: Refund, currency: str) -> bool:
        """Have the provider pay the refund back and remember its reference; False,
        left for the sweep, when the provider cannot be reached."""
        try:
            reference = await self.payments.pay_back(
                order_id=refund.order_id,
                refund_id=refund.id,
                amount=refund.amount,
                currency=currency,
            )
        except ProblemError as error:
            logger.warning(
                "refund pay-back postponed",
                extra={"refund_id": str(refund.id), "error": str(error)},
            )
            return False
        await self.refunds.mark_paid(refund.id, reference)
        await self.session.commit()
        return True

    async def page(self, order: PurchaseOrder, page: PageParams) -> Page[RefundRead]:
        items, total = await self.refunds.page(order.id, limit=page.limit, offset=page.offset)
        await self.session.commit()
        return Page[RefundRead](
            items=[RefundRead.model_validate(item) for item in items],
            total=total,
            limit=page.limit,
            offset=page.offset,
        )


def _replayed_refund(existing: Refund, fingerprint: str) -> RefundAnswer:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return RefundAnswer(RefundRead.model_validate(existing), replayed=True)


def _new_refund(
    order: PurchaseOrder,
    data: RefundCreate,
    bought: dict[uuid.UUID, tuple[str, Decimal]],
    requested_by: uuid.UUID,
    key: str,
    fingerprint: str,
) -> Refund:
    """The refund asked for, priced at what the order paid; 422 for a product the
    order does not have."""
    unknown = [
        field_error(
            ["body", "lines", index, "product_id"], "the order has no such product", "not_in_order"
        )
        for index, line in enumerate(data.lines)
        if line.product_id not in bought
    ]
    if unknown:
        raise RefundExceedsOrder(unknown)
    lines = [
        RefundLine(
            product_id=line.product_id,
            position=position,
            quantity=line.quantity,
            amount=bought[line.product_id][1] * line.quantity,
        )
        for position, line in enumerate(data.lines)
    ]
    return Refund(
        id=uuid.uuid4(),
        order_id=order.id,
        amount=sum((line.amount for line in lines), ZERO),
        restock=data.restock,
        reason=data.reason,
        requested_by=requested_by,
        idempotency_key=key,
        request_fingerprint=fingerprint,
        created_at=utcnow(),
        lines=lines,
    )
