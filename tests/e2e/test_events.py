"""Events between the real processes: the catalog announces a product over RabbitMQ and
the inventory gives it a stock record, without either calling the other; accounts and
orders reach the notification service, even when the broker was down meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Shop
    from service_testing import RabbitMQNode

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]


async def test_a_new_product_gets_an_empty_stock_record(
    gateway: httpx.AsyncClient, shop: Shop
) -> None:
    admin = await shop.admin_headers()
    created = await gateway.post(
        "/api/v1/products",
        json={
            "sku": f"EVT-{uuid.uuid4().hex[:10]}",
            "name": "Announced lamp",
            "price": "12.50",
            "category": "home",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]

    deadline = time.monotonic() + 15
    while (stock := await gateway.get(f"/api/v1/inventory/{product_id}")).status_code == 404:
        assert time.monotonic() < deadline, "product.created never reached the inventory"
        await asyncio.sleep(0.1)

    assert stock.status_code == 200, stock.text
    assert stock.json() == {"product_id": product_id, "available": 0, "reserved": 0}


async def stocked_product(gateway: httpx.AsyncClient, admin: dict[str, str]) -> str:
    created = await gateway.post(
        "/api/v1/products",
        json={
            "sku": f"NTF-{uuid.uuid4().hex[:10]}",
            "name": "Notified kettle",
            "price": "19.90",
            "category": "home",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product_id: str = created.json()["id"]
    stocked = await gateway.put(
        f"/api/v1/inventory/{product_id}", json={"available": 100}, headers=admin
    )
    assert stocked.status_code in (200, 201), stocked.text
    return product_id


async def place_order(
    gateway: httpx.AsyncClient, headers: dict[str, str], product_id: str
) -> dict[str, Any]:
    response = await gateway.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product_id, "quantity": 1}], "payment_token": "tok_ok"},
        headers={**headers, "Idempotency-Key": f"ntf-{uuid.uuid4()}"},
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    assert order["status"] == "confirmed"
    return order


async def wait_for_notifications(
    gateway: httpx.AsyncClient,
    headers: dict[str, str],
    expected: set[tuple[str, str | None]],
    within: float = 15.0,
) -> list[dict[str, Any]]:
    """Poll GET /api/v1/notifications until it holds every (kind, order_id) expected."""
    deadline = time.monotonic() + within
    while True:
        response = await gateway.get("/api/v1/notifications", headers=headers)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        seen = {(item["kind"], item["order_id"]) for item in items}
        if expected <= seen:
            return items
        assert time.monotonic() < deadline, f"missing notifications: {expected - seen}"
        await asyncio.sleep(0.2)


async def test_a_customer_is_welcomed_and_told_the_order_is_confirmed(
    gateway: httpx.AsyncClient, shop: Shop
) -> None:
    product_id = await stocked_product(gateway, await shop.admin_headers())
    email = f"notified-{uuid.uuid4().hex[:10]}@example.com"
    user = await shop.register(email)
    headers = await shop.headers(email)

    order = await place_order(gateway, headers, product_id)

    items = await wait_for_notifications(
        gateway, headers, {("welcome", None), ("order_confirmed", order["id"])}
    )
    assert {item["user_id"] for item in items} == {user["id"]}
    # Recorded, not mailed: the test stack has no SMTP server.
    assert {item["status"] for item in items} == {"recorded"}
    assert len(items) == 2, "each event notifies once"


async def test_orders_placed_while_the_broker_is_down_are_notified_once_it_returns(
    gateway: httpx.AsyncClient, shop: Shop, rabbitmq_node: RabbitMQNode
) -> None:
    """The stack's broker is the run's own node: stopping it disturbs no other run."""
    product_id = await stocked_product(gateway, await shop.admin_headers())
    email = f"outage-{uuid.uuid4().hex[:10]}@example.com"
    await shop.register(email)
    headers = await shop.headers(email)
    await wait_for_notifications(gateway, headers, {("welcome", None)})

    await asyncio.to_thread(rabbitmq_node.stop_app)
    try:
        # Checkout talks HTTP only: it does not need the broker.
        orders = [await place_order(gateway, headers, product_id) for _ in range(3)]
    finally:
        await asyncio.to_thread(rabbitmq_node.start_app)

    expected = {("order_confirmed", order["id"]) for order in orders} | {("welcome", None)}
    # The relays and the consumer reconnect with growing pauses: allow for them.
    items = await wait_for_notifications(gateway, headers, expected, within=90)
    assert len(items) == 4, "nothing lost, nothing twice"
