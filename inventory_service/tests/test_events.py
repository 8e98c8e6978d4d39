"""Events the inventory consumes: a catalog product gets its (empty) stock record."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from eventbus import EventEnvelope, Topology
from eventbus.broker import declare_exchange
from eventbus.metrics import EVENTS_CONSUMED
from eventbus.types import OrderChanged, OrderItem, OrderRefunded, ProductChanged
from inventory_service.events import handlers
from inventory_service.models import inbox_event
from service_testing import RABBITMQ_URL, eventually

if TYPE_CHECKING:
    from conftest import Inventory

pytestmark = pytest.mark.rabbitmq


def product_event(type_: str, product_id: uuid.UUID, *, is_active: bool = True) -> EventEnvelope:
    data = ProductChanged(
        product_id=product_id, sku="SKU-1", name="Lamp", price="9.90", is_active=is_active
    )
    return EventEnvelope.new(type_, data, source="product_service")


async def publish(topology: Topology, *events: EventEnvelope) -> None:
    """Publish as product_service's relay does."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        exchange = await declare_exchange(connection, channel, topology)
        for event in events:
            await exchange.publish(
                aio_pika.Message(
                    event.to_json().encode(),
                    message_id=str(event.id),
                    content_type="application/json",
                    type=event.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=event.type,
            )
    finally:
        await connection.close()


@pytest.fixture
async def consuming(app: FastAPI) -> None:
    await eventually(app.state.events.consumer.consuming.is_set, message="not consuming")


async def processed(app: FastAPI, event: EventEnvelope) -> bool:
    async with app.state.database.sessionmaker() as session:
        count = await session.scalar(select(func.count()).where(inbox_event.c.event_id == event.id))
    return count == 1


@pytest.mark.usefixtures("consuming")
class TestProductCreated:
    async def test_creates_an_empty_stock_record(
        self, app: FastAPI, client: AsyncClient, topology: Topology
    ) -> None:
        product_id = uuid.uuid4()

        await publish(topology, product_event("product.created", product_id))

        async def has_record() -> bool:
            return (await client.get(f"/v1/inventory/{product_id}")).status_code == 200

        await eventually(has_record, message="no stock record appeared")
        response = await client.get(f"/v1/inventory/{product_id}")
        assert response.json() == {"product_id": str(product_id), "available": 0, "reserved": 0}

    async def test_never_overwrites_stock_that_was_set(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        product_id = await inventory.stocked_product(7)
        event = product_event("product.created", product_id)

        await publish(topology, event)

        await eventually(lambda: processed(app, event))
        assert await inventory.units(product_id) == (7, 0, 0)

    async def test_a_redelivered_event_is_not_processed_again(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        product_id = uuid.uuid4()
        event = product_event("product.created", product_id)
        await publish(topology, event)
        await eventually(lambda: processed(app, event))
        duplicates = EVENTS_CONSUMED.labels("product.created", "duplicate")
        before = duplicates._value.get()

        await publish(topology, event)

        await eventually(lambda: duplicates._value.get() == before + 1)
        assert await inventory.units(product_id) == (0, 0, 0)

    async def test_an_update_of_a_product_without_a_record_creates_it(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        product_id = uuid.uuid4()
        event = product_event("product.updated", product_id, is_active=False)

        await publish(topology, event)

        await eventually(lambda: processed(app, event))
        assert await inventory.units(product_id) == (0, 0, 0)


def order_event(
    type_: str, order_id: uuid.UUID, items: dict[uuid.UUID, int], reason: str | None = None
) -> EventEnvelope:
    data = OrderChanged(
        order_id=order_id,
        user_id=uuid.uuid4(),
        status="confirmed" if type_ == "order.confirmed" else "cancelled",
        items=[OrderItem(product_id=p, quantity=q) for p, q in items.items()],
        total_amount=Decimal("10.00"),
        reason=reason,
    )
    return EventEnvelope.new(type_, data, source="order_service")


async def reservation(client: AsyncClient, order_id: uuid.UUID) -> dict[str, Any]:
    response = await client.get(f"/internal/v1/reservations/{order_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_order_confirmed_is_not_taken() -> None:
    # The saga confirms an order only once inventory answered that its units are sold:
    # the event would leave nothing to do.
    assert "order.confirmed" not in handlers.types
    assert {"order.cancelled", "order.refunded"} <= set(handlers.types)


@pytest.mark.usefixtures("consuming")
class TestOrderEvents:
    """The HTTP calls of the checkout saga are primary; these events are the safety net."""

    async def test_cancelled_releases_held_or_sold_stock_with_the_reason(
        self, app: FastAPI, client: AsyncClient, inventory: Inventory, topology: Topology
    ) -> None:
        product_id = await inventory.stocked_product(10)
        held, sold = uuid.uuid4(), uuid.uuid4()
        await inventory.reserve(held, {product_id: 2})
        await inventory.reserve(sold, {product_id: 3})
        await inventory.commit(sold)
        events = [
            order_event("order.cancelled", held, {product_id: 2}, "payment_declined"),
            order_event("order.cancelled", sold, {product_id: 3}, "cancelled_by_user"),
        ]

        await publish(topology, *events)

        await eventually(lambda: processed(app, events[0]))
        await eventually(lambda: processed(app, events[1]))
        assert await inventory.units(product_id) == (10, 0, 0)
        released = await reservation(client, held)
        assert (released["status"], released["reason"]) == ("released", "payment_declined")
        assert (await reservation(client, sold))["reason"] == "cancelled_by_user"

    async def test_cancelled_twice_or_without_a_reservation_changes_nothing(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        assert (await inventory.release(order_id, "cancelled_by_user")).status_code == 200
        again = order_event("order.cancelled", order_id, {product_id: 4}, "cancelled_by_user")
        never_reserved = order_event(
            "order.cancelled", uuid.uuid4(), {product_id: 1}, "out_of_stock"
        )

        await publish(topology, again, never_reserved)

        await eventually(lambda: processed(app, again))
        await eventually(lambda: processed(app, never_reserved))
        assert await inventory.units(product_id) == (10, 0, 0)


def refund_event(
    order_id: uuid.UUID, items: dict[uuid.UUID, int], *, restock: bool = True
) -> EventEnvelope:
    data = OrderRefunded(
        order_id=order_id,
        user_id=uuid.uuid4(),
        refund_id=uuid.uuid4(),
        amount=Decimal("10.00"),
        items=[OrderItem(product_id=p, quantity=q) for p, q in items.items()],
        restock=restock,
    )
    return EventEnvelope.new("order.refunded", data, source="order_service")


def again(event: EventEnvelope) -> EventEnvelope:
    """The same refund in an event of its own id (past the inbox, as a replay from the
    dead-letter queue after the inbox forgot it would be)."""
    return EventEnvelope.new(event.type, event.data, source=event.source)


@pytest.mark.usefixtures("consuming")
class TestOrderRefunded:
    async def sold_order(self, inventory: Inventory, units: dict[uuid.UUID, int]) -> uuid.UUID:
        order_id = uuid.uuid4()
        assert (await inventory.reserve(order_id, units)).status_code == 201
        assert (await inventory.commit(order_id)).status_code == 200
        return order_id

    async def test_restock_moves_sold_units_back_to_available_once(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        lamp, bulb = await inventory.stocked_product(10), await inventory.stocked_product(5)
        order_id = await self.sold_order(inventory, {lamp: 3, bulb: 2})
        event = refund_event(order_id, {lamp: 2})

        await publish(topology, event, event, again(event))

        await eventually(lambda: processed(app, event))
        assert await inventory.units(lamp) == (9, 0, 1)
        assert await inventory.units(bulb) == (3, 0, 2)  # not refunded: still sold

    async def test_without_restock_nothing_moves(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        lamp = await inventory.stocked_product(10)
        order_id = await self.sold_order(inventory, {lamp: 3})
        event = refund_event(order_id, {lamp: 3}, restock=False)

        await publish(topology, event)

        await eventually(lambda: processed(app, event))
        assert await inventory.units(lamp) == (7, 0, 3)

    async def test_never_more_than_the_order_sold(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        lamp = await inventory.stocked_product(10)
        order_id = await self.sold_order(inventory, {lamp: 3})
        other_order = await self.sold_order(inventory, {lamp: 4})
        events = [refund_event(order_id, {lamp: 2}), refund_event(order_id, {lamp: 2})]

        await publish(topology, *events)

        await eventually(lambda: processed(app, events[1]))
        # The second asks for more than the order has left sold: skipped, and the other
        # order's sold units are not taken for it.
        assert await inventory.units(lamp) == (5, 0, 5)
        assert other_order

    async def test_a_cancellation_after_a_restock_returns_only_the_rest(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        lamp = await inventory.stocked_product(10)
        order_id = await self.sold_order(inventory, {lamp: 3})
        event = refund_event(order_id, {lamp: 1})
        await publish(topology, event)
        await eventually(lambda: processed(app, event))

        assert (await inventory.release(order_id, "cancelled_by_user")).status_code == 200

        available, reserved, sold = await inventory.units(lamp)
        assert (available, reserved, sold) == (10, 0, 0)
        assert available + reserved + sold == 10

    async def test_an_order_that_sold_nothing_is_not_restocked(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        lamp = await inventory.stocked_product(10)
        released = uuid.uuid4()
        await inventory.reserve(released, {lamp: 2})
        await inventory.release(released, "payment_declined")
        events = [refund_event(released, {lamp: 2}), refund_event(uuid.uuid4(), {lamp: 1})]

        await publish(topology, *events)

        await eventually(lambda: processed(app, events[0]))
        await eventually(lambda: processed(app, events[1]))
        assert await inventory.units(lamp) == (10, 0, 0)

    async def test_a_refund_before_the_commit_waits_for_it(
        self, app: FastAPI, inventory: Inventory, topology: Topology
    ) -> None:
        lamp = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {lamp: 2})
        event = refund_event(order_id, {lamp: 1})

        await publish(topology, event)
        # Handed back while the reservation is only held; once committed, it restocks.
        await inventory.commit(order_id)

        await eventually(lambda: processed(app, event), within=30)
        assert await inventory.units(lamp) == (9, 0, 1)
