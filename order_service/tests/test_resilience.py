"""When product_service or inventory_service is down or slow, checkout answers 503/504
quickly, leaves no stock held, and the sweep repairs what a failure left behind."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from order_service.models import IdempotencyState, outbox_event
from order_service.pricing import PricedLine, PricedOrder
from order_service.repository import IdempotencyRepository, OrderRepository
from service_testing import assert_problem, hung_server
from shared.db import utcnow

if TYPE_CHECKING:
    from conftest import Customer, OrderAppFactory, PlaceOrder, Server, Shop, SlowProxy

    ProxyFactory = Callable[[str], AbstractAsyncContextManager[SlowProxy]]


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://order-service") as c:
        yield c


async def all_orders(client: httpx.AsyncClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await client.get("/v1/orders", params={"limit": 100}, headers=admin)
    ).json()["items"]
    return items


async def wait_for_order(
    client: httpx.AsyncClient, admin: dict[str, str], predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            for order in await all_orders(client, admin):
                if predicate(order):
                    return order
            await asyncio.sleep(0.05)


def later(hours: float = 1) -> datetime:
    return utcnow() + timedelta(hours=hours)


class TestInventoryDown:
    async def test_fast_503_and_nothing_held(
        self,
        order_app_factory: OrderAppFactory,
        closed_port: int,
        shop: Shop,
        customer: Customer,
        admin: dict[str, str],
        app: FastAPI,
    ) -> None:
        product = await shop.product(stock=10)
        dead = f"http://127.0.0.1:{closed_port}"
        async with (
            order_app_factory(inventory_service_url=dead, breaker_failure_threshold=3) as broken,
            client_of(broken) as client,
        ):
            started = time.perf_counter()
            response = await client.post(
                "/v1/orders", json=shop.body((product, 2)), headers=customer.headers("k")
            )
            assert time.perf_counter() - started < 1.0
            assert_problem(response, 503)

            # The key was given up: a retry is a new attempt, not a 409.
            retry = await client.post(
                "/v1/orders", json=shop.body((product, 2)), headers=customer.headers("k")
            )
            assert_problem(retry, 503)

            # Repeated failures open the circuit: refused at once, with Retry-After.
            for _ in range(5):
                response = await client.post(
                    "/v1/orders", json=shop.body((product, 2)), headers=customer.headers()
                )
            assert_problem(response, 503)
            assert int(response.headers["retry-after"]) >= 1

            assert await shop.stock(product["id"]) == (10, 0)
            # The first attempt's three failed calls opened the circuit; from then on
            # requests were refused before an order was created.
            left = await all_orders(client, admin)
            assert [order["status"] for order in left] == ["pending"]

        # Orders the failure left pending are never confirmed: the sweep expires them.
        report = await app.state.sweeper.sweep(now=later())
        assert report.expired == len(left)
        async with client_of(app) as client:
            orders = await all_orders(client, admin)
        assert {(o["status"], o["cancel_reason"]) for o in orders} == {("cancelled", "expired")}
        assert await shop.stock(product["id"]) == (10, 0)

    async def test_cancel_while_down_gives_stock_back_later(
        self,
        order_app_factory: OrderAppFactory,
        slow_proxy_factory: ProxyFactory,
        inventory_server: Server,
        shop: Shop,
        customer: Customer,
    ) -> None:
        product = await shop.product(stock=10)
        async with (
            slow_proxy_factory(inventory_server.url) as proxy,
            order_app_factory(
                inventory_service_url=proxy.url, order_sweep_seconds=0.2, breaker_reset_seconds=0.2
            ) as app,
            client_of(app) as client,
        ):
            order = (
                await client.post(
                    "/v1/orders", json=shop.body((product, 2)), headers=customer.headers()
                )
            ).json()
            assert order["status"] == "confirmed"

            proxy.mode = "down"
            cancel = await client.post(f"/v1/orders/{order['id']}/cancel", headers=customer.auth)

            # Cancelled all the same; the stock comes back once inventory answers again.
            assert cancel.status_code == 200, cancel.text
            assert cancel.json()["cancel_reason"] == "cancelled_by_user"
            assert await shop.stock(product["id"]) == (8, 0)
            proxy.mode = "pass"
            await shop.wait_for_stock(product["id"], (10, 0))


class TestProductServiceDown:
    async def test_fast_503_and_no_order(
        self,
        order_app_factory: OrderAppFactory,
        closed_port: int,
        shop: Shop,
        customer: Customer,
        admin: dict[str, str],
    ) -> None:
        product = await shop.product(stock=10)
        dead = f"http://127.0.0.1:{closed_port}"
        async with (
            order_app_factory(product_service_url=dead) as broken,
            client_of(broken) as client,
        ):
            started = time.perf_counter()
            response = await client.post(
                "/v1/orders", json=shop.body((product, 1)), headers=customer.headers("k")
            )
            assert time.perf_counter() - started < 1.0
            assert_problem(response, 503)
            retry = await client.post(
                "/v1/orders", json=shop.body((product, 1)), headers=customer.headers("k")
            )
            assert_problem(retry, 503)
            assert await all_orders(client, admin) == []
        assert await shop.stock(product["id"]) == (10, 0)


class TestSlowInventory:
    async def test_504_and_the_sweep_gives_the_late_sale_back(
        self,
        order_app_factory: OrderAppFactory,
        slow_proxy_factory: ProxyFactory,
        inventory_server: Server,
        shop: Shop,
        customer: Customer,
        admin: dict[str, str],
    ) -> None:
        product = await shop.product(stock=10)
        async with (
            slow_proxy_factory(inventory_server.url) as proxy,
            order_app_factory(
                inventory_service_url=proxy.url,
                http_read_timeout=0.3,
                reservation_ttl_seconds=2,
                pending_order_grace_seconds=0,
                order_sweep_seconds=0.2,
            ) as app,
            client_of(app) as client,
        ):
            proxy.mode, proxy.delay = "slow_reserve", 1.0
            started = time.perf_counter()
            response = await client.post(
                "/v1/orders", json=shop.body((product, 2)), headers=customer.headers()
            )
            assert time.perf_counter() - started < 1.0
            assert_problem(response, 504)

            # The sale still lands after the timeout (sold at once: nothing held)...
            await shop.wait_for_stock(product["id"], (8, 0), within=5)
            # ...and the sweep expires the abandoned order and gives its stock back.
            expired = await wait_for_order(client, admin, lambda o: o["status"] == "cancelled")
            assert expired["cancel_reason"] == "expired"
            await shop.wait_for_stock(product["id"], (10, 0))

    async def test_cancel_during_checkout_wins_and_the_stock_goes_back(
        self,
        order_app_factory: OrderAppFactory,
        slow_proxy_factory: ProxyFactory,
        inventory_server: Server,
        shop: Shop,
        customer: Customer,
        admin: dict[str, str],
    ) -> None:
        product = await shop.product(stock=10)
        async with (
            slow_proxy_factory(inventory_server.url) as proxy,
            order_app_factory(inventory_service_url=proxy.url) as app,
            client_of(app) as client,
        ):
            proxy.mode, proxy.delay = "slow_reserve", 1.0
            headers = customer.headers()
            checkout = asyncio.create_task(
                client.post("/v1/orders", json=shop.body((product, 2)), headers=headers)
            )
            pending = await wait_for_order(client, admin, lambda o: o["status"] == "pending")
            cancel = await client.post(f"/v1/orders/{pending['id']}/cancel", headers=customer.auth)
            assert cancel.json()["cancel_reason"] == "cancelled_by_user"

            response = await checkout

            # The checkout found its order cancelled: it answers with it as it is and
            # gives back the stock its late reservation took.
            assert response.status_code == 201, response.text
            assert response.json()["status"] == "cancelled"
            assert response.json()["cancel_reason"] == "cancelled_by_user"
            assert await shop.stock(product["id"]) == (10, 0)
            replay = await client.post("/v1/orders", json=shop.body((product, 2)), headers=headers)
            assert replay.content == response.content


class TestSweep:
    async def _crashed_checkout(
        self, app: FastAPI, shop: Shop, customer: Customer, product: dict[str, Any]
    ) -> uuid.UUID:
        """What a process that died after reserving leaves: a pending order, its claimed
        key and stock held at inventory."""
        order_id = uuid.uuid4()
        price = Decimal(product["price"])
        line = PricedLine(uuid.UUID(product["id"]), product["name"], price, 3, price * 3)
        priced = PricedOrder(lines=(line,), total_amount=price * 3, currency="USD")
        async with app.state.database.sessionmaker() as session:
            await IdempotencyRepository(session).claim(customer.id, "crash", "f" * 64, order_id)
            await OrderRepository(session).add(order_id, customer.id, priced)
            await session.commit()
        reserved = await shop.inventory.post(
            "/internal/v1/reservations",
            json={
                "order_id": str(order_id),
                "items": [{"product_id": product["id"], "quantity": 3}],
            },
        )
        assert reserved.status_code == 201, reserved.text
        return order_id

    async def test_expires_an_abandoned_checkout_and_gives_back_its_stock(
        self,
        app: FastAPI,
        shop: Shop,
        customer: Customer,
        client: httpx.AsyncClient,
        place_order: PlaceOrder,
    ) -> None:
        product = await shop.product(stock=10)
        order_id = await self._crashed_checkout(app, shop, customer, product)
        assert await shop.stock(product["id"]) == (7, 3)

        # A checkout that may still be running is left alone.
        assert not await app.state.sweeper.sweep()
        assert await shop.stock(product["id"]) == (7, 3)

        report = await app.state.sweeper.sweep(now=later())

        assert (report.expired, report.keys_deleted) == (1, 1)
        order = (await client.get(f"/v1/orders/{order_id}", headers=customer.auth)).json()
        assert (order["status"], order["cancel_reason"]) == ("cancelled", "expired")
        assert await shop.stock(product["id"]) == (10, 0)
        # The expiry is announced like any cancellation.
        async with app.state.database.sessionmaker() as session:
            payloads = (await session.scalars(select(outbox_event.c.payload))).all()
        events = [json.loads(payload) for payload in payloads]
        assert any(
            event["type"] == "order.cancelled"
            and event["data"]["order_id"] == str(order_id)
            and event["data"]["reason"] == "expired"
            for event in events
        )
        # The crashed request's key is free again.
        response = await place_order((product, 3), key="crash")
        assert response.json()["status"] == "confirmed"
        # Sweeping again changes nothing.
        assert not await app.state.sweeper.sweep(now=later())

    async def test_forgets_answers_after_their_retention(
        self,
        app: FastAPI,
        shop: Shop,
        place_order: PlaceOrder,
        customer: Customer,
    ) -> None:
        product = await shop.product(stock=10)
        first = await place_order((product, 1), key="old")

        assert (await app.state.sweeper.sweep(now=later(hours=23))).keys_deleted == 0
        assert (await place_order((product, 1), key="old")).content == first.content
        assert (await app.state.sweeper.sweep(now=later(hours=25))).keys_deleted == 1

        async with app.state.database.sessionmaker() as session:
            assert await IdempotencyRepository(session).get(customer.id, "old") is None
        again = await place_order((product, 1), key="old")
        assert again.json()["id"] != first.json()["id"]

    async def test_keys_are_stored_completed_with_the_answer(
        self, app: FastAPI, shop: Shop, place_order: PlaceOrder, customer: Customer
    ) -> None:
        product = await shop.product()
        response = await place_order((product, 1), key="stored")

        async with app.state.database.sessionmaker() as session:
            key = await IdempotencyRepository(session).get(customer.id, "stored")

        assert key is not None
        assert key.state is IdempotencyState.COMPLETED
        assert (key.response_status, key.response_body) == (201, response.json())
        assert str(key.order_id) == response.json()["id"]


class TestInventoryHung:
    """Inventory accepts connections and never answers (hung, not down)."""

    async def test_checkout_answers_within_its_budget_and_reads_keep_working(
        self, order_app_factory: OrderAppFactory, shop: Shop, customer: Customer
    ) -> None:
        product = await shop.product(stock=10)
        async with (
            hung_server() as hung,
            order_app_factory(inventory_service_url=hung) as broken,
            client_of(broken) as client,
        ):
            started = time.perf_counter()
            response = await client.post(
                "/v1/orders",
                json=shop.body((product, 2)),
                headers={**customer.headers(), "X-Request-Budget-Ms": "1500"},
            )
            elapsed = time.perf_counter() - started
            assert_problem(response, 504)
            # Its dependency failed, not order_service: the gateway's breaker stays shut.
            assert response.headers["x-dependency-failure"]
            # One wait for the reservation, bounded by the budget; the stock release
            # that follows a failure runs after the answer.
            assert elapsed < 2.5

            started = time.perf_counter()
            listed = await client.get("/v1/orders", headers=customer.auth)
            assert listed.status_code == 200
            assert [order["status"] for order in listed.json()["items"]] == ["pending"]
            assert time.perf_counter() - started < 1.0
