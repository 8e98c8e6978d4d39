"""What a shop needs after the demo path, through the gateway with every process
running: shipping addresses, order timelines and receipts in the customer's e-mails."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service_testing import assert_problem, eventually

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

ADDRESS = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


async def new_product(
    gateway: httpx.AsyncClient, admin: dict[str, str], *, name: str, price: str, stock: int
) -> dict[str, Any]:
    created = await gateway.post(
        "/api/v1/products",
        json={"sku": f"COM-{uuid.uuid4().hex[:10]}", "name": name, "price": price, "category": "c"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product: dict[str, Any] = created.json()
    stocked = await gateway.put(
        f"/api/v1/inventory/{product['id']}", json={"available": stock}, headers=admin
    )
    assert stocked.status_code in (200, 201), stocked.text
    return product


async def customer(shop: Shop) -> dict[str, str]:
    email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
    await shop.register(email)
    return await shop.headers(email)


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def notifications_of(
    gateway: httpx.AsyncClient, headers: dict[str, str], kind: str
) -> list[dict[str, Any]]:
    page = (await gateway.get("/api/v1/notifications", headers=headers)).json()
    return [item for item in page["items"] if item["kind"] == kind]


class TestReceipts:
    async def test_an_order_with_an_address_is_confirmed_by_a_receipt(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Brass desk lamp", price="49.50", stock=5)
        bulb = await new_product(gateway, admin, name="Warm LED bulb", price="3.25", stock=50)
        buyer = await customer(shop)

        placed = await gateway.post(
            "/api/v1/orders",
            json={
                "items": [
                    {"product_id": lamp["id"], "quantity": 1},
                    {"product_id": bulb["id"], "quantity": 4},
                ],
                "payment_token": "tok_ok",
                "shipping_address": ADDRESS,
            },
            headers={**buyer, **key()},
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["shipping_address"] == {**ADDRESS, "line2": None}

        async def mailed() -> list[dict[str, Any]]:
            return await notifications_of(gateway, buyer, "order_confirmed")

        await eventually(mailed, message="no order_confirmed e-mail")
        body = (await mailed())[0]["body"]
        assert "1 x Brass desk lamp at 49.50 USD = 49.50 USD" in body
        assert "4 x Warm LED bulb at 3.25 USD = 13.00 USD" in body
        assert "Total: 62.50 USD" in body
        assert "SW1Y 4JH London" in body
        assert "United Kingdom" in body
        assert lamp["id"] not in body

    async def test_a_bad_address_is_a_422(self, gateway: httpx.AsyncClient, shop: Shop) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Lamp", price="10.00", stock=5)
        buyer = await customer(shop)

        for address in ({**ADDRESS, "country": "UK"}, {**ADDRESS, "city": "Lon\x07don"}):
            response = await gateway.post(
                "/api/v1/orders",
                json={
                    "items": [{"product_id": lamp["id"], "quantity": 1}],
                    "payment_token": "tok_ok",
                    "shipping_address": address,
                },
                headers={**buyer, **key()},
            )
            assert_problem(response, 422)


class TestTimeline:
    async def test_oldest_first_through_the_gateway(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Lamp", price="10.00", stock=5)
        buyer = await customer(shop)
        order = (
            await gateway.post(
                "/api/v1/orders",
                json={
                    "items": [{"product_id": lamp["id"], "quantity": 1}],
                    "payment_token": "tok_ok",
                },
                headers={**buyer, **key()},
            )
        ).json()
        await gateway.post(f"/api/v1/orders/{order['id']}/ship", headers=admin)

        response = await gateway.get(f"/api/v1/orders/{order['id']}/timeline", headers=buyer)

        assert response.status_code == 200, response.text
        assert [entry["event"] for entry in response.json()] == ["created", "confirmed", "shipped"]
        stranger = await customer(shop)
        assert_problem(
            await gateway.get(f"/api/v1/orders/{order['id']}/timeline", headers=stranger), 404
        )
