"""Checkout through the gateway, every service on PostgreSQL: races for the last units
never oversell, never deadlock and never lose stock; retries with an Idempotency-Key
replay instead of ordering twice. Each test runs on one process of each service and
again on two of each behind balancers (`pg_system`)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


async def new_product(client: httpx.AsyncClient, admin: dict[str, str], stock: int) -> str:
    created = await client.post(
        "/api/v1/products",
        json={
            "sku": f"RACE-{uuid.uuid4().hex[:10]}",
            "name": "Limited edition",
            "price": "25.00",
            "category": "race",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product_id: str = created.json()["id"]
    stocked = await client.put(
        f"/api/v1/inventory/{product_id}", json={"available": stock}, headers=admin
    )
    assert stocked.status_code in (200, 201), stocked.text
    return product_id


async def customers(shop: Shop, count: int) -> list[dict[str, str]]:
    emails = [f"racer-{uuid.uuid4().hex[:10]}@example.com" for _ in range(count)]
    for email in emails:
        await shop.register(email)
    return [await shop.headers(email) for email in emails]


async def place(
    client: httpx.AsyncClient, headers: dict[str, str], lines: list[tuple[str, int]], key: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/orders",
        json={
            "items": [{"product_id": product, "quantity": quantity} for product, quantity in lines],
            "payment_token": "tok_ok",
        },
        headers={**headers, "Idempotency-Key": key},
    )


async def all_orders(client: httpx.AsyncClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    """Every order, read through the orders API as an administrator."""
    orders: list[dict[str, Any]] = []
    while True:
        page = (
            await client.get(
                "/api/v1/orders", params={"limit": 100, "offset": len(orders)}, headers=admin
            )
        ).json()
        orders += page["items"]
        if len(orders) >= page["total"]:
            return orders


async def settled_orders(
    client: httpx.AsyncClient, admin: dict[str, str], products: list[str]
) -> list[dict[str, Any]]:
    """The orders of `products` once none is pending any more; each must be confirmed or
    cancelled for short stock."""
    async with asyncio.timeout(30):
        while True:
            orders = [
                order
                for order in await all_orders(client, admin)
                if {line["product_id"] for line in order["items"]} & set(products)
            ]
            if all(order["status"] != "pending" for order in orders):
                break
            await asyncio.sleep(0.2)
    outcomes = {(order["status"], order["cancel_reason"]) for order in orders}
    assert outcomes <= {("confirmed", None), ("cancelled", "out_of_stock")}, outcomes
    return orders


def sold(orders: list[dict[str, Any]]) -> Counter[str]:
    """Units of each product in the confirmed orders."""
    units: Counter[str] = Counter()
    for order in orders:
        if order["status"] == "confirmed":
            for line in order["items"]:
                units[line["product_id"]] += line["quantity"]
    return units


async def stock(client: httpx.AsyncClient, product_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/inventory/{product_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def answered(responses: list[httpx.Response]) -> list[dict[str, Any]]:
    """The orders in the answers. Anything else must be a refusal by an overloaded or
    unreachable dependency (a problem document), never a crash."""
    orders = []
    for response in responses:
        if response.status_code == 201:
            orders.append(response.json())
        else:
            assert response.status_code in (503, 504), response.text
            assert_problem(response, response.status_code)
    return orders


class TestRaceForTheLastUnits:
    async def test_fifty_buyers_ten_units(
        self, pg_system_gateway: httpx.AsyncClient, pg_system_shop: Shop
    ) -> None:
        admin = await pg_system_shop.admin_headers()
        product = await new_product(pg_system_gateway, admin, stock=10)
        buyers = await customers(pg_system_shop, 5)

        responses = await asyncio.gather(
            *(
                place(pg_system_gateway, buyers[n % len(buyers)], [(product, 1)], f"race-{n}")
                for n in range(50)
            )
        )

        answers = answered(list(responses))
        orders = await settled_orders(pg_system_gateway, admin, [product])
        assert len([order for order in orders if order["status"] == "confirmed"]) == 10
        assert len(orders) >= len(answers) >= 10
        level = await stock(pg_system_gateway, product)
        assert (level["available"], level["reserved"]) == (0, 0)
        assert level["available"] + level["reserved"] + sold(orders)[product] == 10

    async def test_multi_line_orders_over_shared_products(
        self, pg_system_gateway: httpx.AsyncClient, pg_system_shop: Shop
    ) -> None:
        admin = await pg_system_shop.admin_headers()
        products = [await new_product(pg_system_gateway, admin, stock=10) for _ in range(4)]
        buyers = await customers(pg_system_shop, 5)
        rng = random.Random(20261125)
        baskets = [
            # Lines in a random order each time: a service that locked rows in the order
            # given would deadlock two baskets that share products.
            [(product, rng.randint(1, 2)) for product in rng.sample(products, rng.randint(2, 4))]
            for _ in range(50)
        ]

        responses = await asyncio.gather(
            *(
                place(pg_system_gateway, buyers[n % len(buyers)], basket, f"basket-{n}")
                for n, basket in enumerate(baskets)
            )
        )

        answers = answered(list(responses))
        orders = await settled_orders(pg_system_gateway, admin, products)
        assert len(orders) >= len(answers)
        assert any(order["status"] == "confirmed" for order in orders)
        assert any(order["status"] == "cancelled" for order in orders)
        units_sold = sold(orders)
        for product in products:
            level = await stock(pg_system_gateway, product)
            assert level["available"] >= 0
            assert level["reserved"] == 0
            assert level["available"] + level["reserved"] + units_sold[product] == 10
        # Every answered order reads back with the lines that were asked for.
        for response, basket in zip(responses, baskets, strict=True):
            if response.status_code == 201:
                lines = {
                    (line["product_id"], line["quantity"]) for line in response.json()["items"]
                }
                assert lines == set(basket)


class TestIdempotencyThroughTheGateway:
    async def test_a_retry_replays_and_orders_once(
        self, pg_system_gateway: httpx.AsyncClient, pg_system_shop: Shop
    ) -> None:
        admin = await pg_system_shop.admin_headers()
        product = await new_product(pg_system_gateway, admin, stock=5)
        (buyer,) = await customers(pg_system_shop, 1)

        first = await place(pg_system_gateway, buyer, [(product, 2)], "retry-me")
        again = await place(pg_system_gateway, buyer, [(product, 2)], "retry-me")
        other = await place(pg_system_gateway, buyer, [(product, 3)], "retry-me")
        missing = await pg_system_gateway.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product, "quantity": 1}], "payment_token": "tok_ok"},
            headers=buyer,
        )

        assert first.status_code == 201, first.text
        assert first.json()["status"] == "confirmed"
        assert (again.status_code, again.content) == (201, first.content)
        assert again.headers["idempotent-replayed"] == "true"
        assert_problem(other, 422)
        assert_problem(missing, 400)
        mine = (await pg_system_gateway.get("/api/v1/orders", headers=buyer)).json()
        assert mine["total"] == 1
        level = await stock(pg_system_gateway, product)
        assert (level["available"], level["reserved"]) == (3, 0)
