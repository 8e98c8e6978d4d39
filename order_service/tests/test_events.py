"""Order events: each status change stages its event in the transaction that makes it."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from order_service.models import outbox_event
from service_testing import eventually

if TYPE_CHECKING:
    from conftest import Customer, PlaceOrder, Shop

ADDRESS = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


async def staged(app: FastAPI, order_id: str) -> list[dict[str, Any]]:
    """The envelopes staged for one order, oldest first."""
    async with app.state.database.sessionmaker() as session:
        rows = await session.execute(
            select(outbox_event.c.payload).order_by(outbox_event.c.occurred_at)
        )
        events = [json.loads(payload) for (payload,) in rows]
    return [event for event in events if event["data"]["order_id"] == order_id]


class TestOrderEvents:
    async def test_a_confirmed_order_stages_created_then_confirmed(
        self, app: FastAPI, place_order: PlaceOrder, shop: Shop, customer: Customer
    ) -> None:
        product = await shop.product(price="12.50", stock=10)

        order = (await place_order((product, 2))).json()

        events = await staged(app, order["id"])
        assert [event["type"] for event in events] == ["order.created", "order.confirmed"]
        assert all(event["source"] == "order_service" for event in events)
        assert events[1]["data"] == {
            "order_id": order["id"],
            "user_id": str(customer.id),
            "status": "confirmed",
            "items": [
                {
                    "product_id": product["id"],
                    "quantity": 2,
                    "product_name": product["name"],
                    "unit_price": "12.50",
                    "line_total": "25.00",
                }
            ],
            "total_amount": "25.00",
            "reason": None,
            "currency": "USD",
            "shipping_address": None,
        }
        assert events[0]["data"]["status"] == "pending"

    async def test_a_declined_payment_stages_cancelled_with_the_reason(
        self, app: FastAPI, place_order: PlaceOrder, shop: Shop
    ) -> None:
        product = await shop.product(stock=10)

        order = (await place_order((product, 1), token="tok_decline")).json()

        events = await staged(app, order["id"])
        assert [event["type"] for event in events] == ["order.created", "order.cancelled"]
        assert events[1]["data"]["reason"] == "payment_declined"
        assert events[1]["data"]["status"] == "cancelled"

    async def test_events_carry_the_shipping_address(
        self, app: FastAPI, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        product = await shop.product(stock=10)
        body = {**shop.body((product, 1)), "shipping_address": ADDRESS}

        order = (await client.post("/v1/orders", json=body, headers=customer.headers())).json()

        events = await staged(app, order["id"])
        assert [event["data"]["shipping_address"] for event in events] == [
            {**ADDRESS, "line2": None},
            {**ADDRESS, "line2": None},
        ]

    async def test_cancel_and_ship_stage_their_events(
        self,
        app: FastAPI,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        customer: Customer,
        admin: dict[str, str],
    ) -> None:
        product = await shop.product(stock=10)
        shipped = (await place_order((product, 1))).json()
        cancelled = (await place_order((product, 1))).json()

        response = await client.post(f"/v1/orders/{shipped['id']}/ship", headers=admin)
        assert response.status_code == 200
        response = await client.post(f"/v1/orders/{cancelled['id']}/cancel", headers=customer.auth)
        assert response.status_code == 200
        # A conflict changes nothing, so it stages nothing.
        response = await client.post(f"/v1/orders/{shipped['id']}/cancel", headers=customer.auth)
        assert response.status_code == 409
        await client.post(f"/v1/orders/{shipped['id']}/deliver", headers=admin)

        assert [event["type"] for event in await staged(app, shipped["id"])] == [
            "order.created",
            "order.confirmed",
            "order.shipped",
            "order.delivered",
        ]
        events = await staged(app, cancelled["id"])
        assert [event["type"] for event in events][-1] == "order.cancelled"
        assert events[-1]["data"]["reason"] == "cancelled_by_user"

    async def test_a_refused_order_stages_nothing(
        self, app: FastAPI, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        product = await shop.product(stock=10)
        body = {"items": [{"product_id": product["id"], "quantity": 1}], "payment_token": "bad"}

        response = await client.post("/v1/orders", json=body, headers=customer.headers())

        assert response.status_code == 422
        async with app.state.database.sessionmaker() as session:
            assert (await session.execute(select(outbox_event.c.id))).first() is None


@pytest.mark.rabbitmq
async def test_no_outbox_row_stays_pending_after_a_checkout(
    app: FastAPI, place_order: PlaceOrder, shop: Shop
) -> None:
    """No queue here is bound for order events: they are published all the same (the
    exchange's alternate one keeps them), not retried for ever."""
    product = await shop.product(stock=10)
    order = (await place_order((product, 1))).json()
    assert len(await staged(app, order["id"])) == 2

    async def pending() -> int:
        async with app.state.database.sessionmaker() as session:
            statement = select(func.count()).where(outbox_event.c.published_at.is_(None))
            return int(await session.scalar(statement) or 0)

    await eventually(lambda: _is_zero(pending()), within=10, message="events stay pending")


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0
