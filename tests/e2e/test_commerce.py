"""What a shop needs after the demo path, through the gateway with every process
running: shipping addresses, order timelines and receipts in the customer's e-mails."""

from __future__ import annotations

import asyncio
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


class TestCatalogReads:
    async def test_the_gateway_answers_repeated_reads_and_reads_back_a_change(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Reading lamp", price="30.00", stock=1)
        path = f"/api/v1/products/{lamp['id']}"

        first = await gateway.get(path)
        second = await gateway.get(path)
        assert first.json() == second.json() == lamp
        assert second.headers["cache-control"].startswith("public, max-age=")
        assert "age" in second.headers  # answered by the gateway's cache

        changed = await gateway.patch(path, json={"price": "27.50"}, headers=admin)
        assert changed.status_code == 200, changed.text
        after = await gateway.get(path)
        assert after.json()["price"] == "27.50"
        assert "age" not in after.headers

        await gateway.delete(path, headers=admin)
        assert_problem(await gateway.get(path), 404)


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


async def put_line(
    gateway: httpx.AsyncClient, headers: dict[str, str], product_id: str, quantity: int
) -> httpx.Response:
    return await gateway.put(
        f"/api/v1/cart/items/{product_id}", json={"quantity": quantity}, headers=headers
    )


class TestCart:
    async def test_cart_to_checkout(self, gateway: httpx.AsyncClient, shop: Shop) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Lamp", price="20.00", stock=1)
        bulb = await new_product(gateway, admin, name="Bulb", price="2.00", stock=10)
        buyer = await customer(shop)

        assert (await put_line(gateway, buyer, lamp["id"], 2)).status_code == 200
        cart = (await put_line(gateway, buyer, bulb["id"], 3)).json()
        assert [(i["product_name"], i["available"]) for i in cart["items"]] == [
            ("Lamp", 1),
            ("Bulb", 10),
        ]
        assert cart["total_amount"] == "46.00"

        # A price change shows in the cart at once.
        await gateway.patch(f"/api/v1/products/{bulb['id']}", json={"price": "2.50"}, headers=admin)
        cart = (await gateway.get("/api/v1/cart", headers=buyer)).json()
        assert cart["items"][1]["unit_price"] == "2.50"
        assert cart["total_amount"] == "47.50"

        # Two lamps, one in stock: the order is cancelled and the cart kept.
        checkout = {"payment_token": "tok_ok", "shipping_address": ADDRESS}
        short = await gateway.post(
            "/api/v1/cart/checkout", json=checkout, headers={**buyer, **key()}
        )
        assert short.status_code == 201, short.text
        assert short.json()["cancel_reason"] == "out_of_stock"
        assert (await gateway.get("/api/v1/cart", headers=buyer)).json() == cart

        await put_line(gateway, buyer, lamp["id"], 1)
        attempt = key()
        placed = await gateway.post(
            "/api/v1/cart/checkout", json=checkout, headers={**buyer, **attempt}
        )
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "confirmed"
        assert placed.json()["total_amount"] == "27.50"
        assert (await gateway.get("/api/v1/cart", headers=buyer)).json()["items"] == []
        replay = await gateway.post(
            "/api/v1/cart/checkout", json=checkout, headers={**buyer, **attempt}
        )
        assert replay.json() == placed.json()
        assert_problem(
            await gateway.post("/api/v1/cart/checkout", json=checkout, headers={**buyer, **key()}),
            409,
        )

    async def test_another_users_cart_is_invisible(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Lamp", price="20.00", stock=1)
        owner, stranger = await customer(shop), await customer(shop)
        await put_line(gateway, owner, lamp["id"], 1)

        assert (await gateway.get("/api/v1/cart", headers=stranger)).json()["items"] == []
        assert (await gateway.delete("/api/v1/cart", headers=stranger)).status_code == 204
        assert len((await gateway.get("/api/v1/cart", headers=owner)).json()["items"]) == 1
        assert_problem(await gateway.get("/api/v1/cart"), 401)

    async def test_fifty_lines_at_most(self, gateway: httpx.AsyncClient, shop: Shop) -> None:
        admin = await shop.admin_headers()
        products = [
            await new_product(gateway, admin, name=f"Part {n}", price="1.00", stock=5)
            for n in range(51)
        ]
        buyer = await customer(shop)

        for product in products[:50]:
            assert (await put_line(gateway, buyer, product["id"], 1)).status_code == 200
        assert_problem(await put_line(gateway, buyer, products[50]["id"], 1), 409)
        cart = (await gateway.get("/api/v1/cart", headers=buyer)).json()
        assert len(cart["items"]) == 50
        assert cart["total_amount"] == "50.00"

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/api/v1/cart/items/not-a-uuid", {"quantity": 1}),
            (f"/api/v1/cart/items/{uuid.uuid4()}", {"quantity": "one"}),
            (f"/api/v1/cart/items/{uuid.uuid4()}", {"quantity": 10**40}),
            (f"/api/v1/cart/items/{uuid.uuid4()}", {"quantity": 1, "note": "x"}),
            (f"/api/v1/cart/items/{uuid.uuid4()}", {"quantity": 1}),  # unknown product
        ],
    )
    async def test_bad_input_is_a_422(
        self, gateway: httpx.AsyncClient, shop: Shop, path: str, body: dict[str, Any]
    ) -> None:
        buyer = await customer(shop)
        assert_problem(await gateway.put(path, json=body, headers=buyer), 422)


async def refund(
    gateway: httpx.AsyncClient,
    headers: dict[str, str],
    order: dict[str, Any],
    lines: list[tuple[str, int]],
    *,
    restock: bool = False,
    idempotency: dict[str, str] | None = None,
) -> httpx.Response:
    return await gateway.post(
        f"/api/v1/orders/{order['id']}/refunds",
        json={
            "lines": [{"product_id": product, "quantity": quantity} for product, quantity in lines],
            "restock": restock,
            "reason": "damaged in transit",
        },
        headers={**headers, **(idempotency or key())},
    )


async def stock_of(gateway: httpx.AsyncClient, product_id: str) -> tuple[int, int]:
    body = (await gateway.get(f"/api/v1/inventory/{product_id}")).json()
    return body["available"], body["reserved"]


async def bought(
    gateway: httpx.AsyncClient, buyer: dict[str, str], lines: list[tuple[str, int]]
) -> dict[str, Any]:
    placed = await gateway.post(
        "/api/v1/orders",
        json={
            "items": [{"product_id": product, "quantity": quantity} for product, quantity in lines],
            "payment_token": "tok_ok",
            "shipping_address": ADDRESS,
        },
        headers={**buyer, **key()},
    )
    assert placed.status_code == 201, placed.text
    order: dict[str, Any] = placed.json()
    assert order["status"] == "confirmed"
    return order


class TestRefunds:
    async def test_partial_refunds_restock_once_and_mail_a_receipt(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Brass desk lamp", price="49.50", stock=10)
        buyer = await customer(shop)
        order = await bought(gateway, buyer, [(lamp["id"], 3)])
        assert await stock_of(gateway, lamp["id"]) == (7, 0)

        replay_key = key()
        first = await refund(
            gateway, admin, order, [(lamp["id"], 1)], restock=True, idempotency=replay_key
        )
        replay = await refund(
            gateway, admin, order, [(lamp["id"], 1)], restock=True, idempotency=replay_key
        )
        second = await refund(gateway, admin, order, [(lamp["id"], 2)])
        over = await refund(gateway, admin, order, [(lamp["id"], 1)])

        assert first.status_code == 201, first.text
        assert replay.json() == first.json()
        assert second.status_code == 201, second.text
        assert_problem(over, 422)
        current = (await gateway.get(f"/api/v1/orders/{order['id']}", headers=buyer)).json()
        assert current["refunded_amount"] == "148.50"
        # One unit back on sale (the refund with restock, once); the other two stay sold.
        await eventually(
            lambda: _stock_is(gateway, lamp["id"], (8, 0)), message="the unit never came back"
        )
        timeline = (
            await gateway.get(f"/api/v1/orders/{order['id']}/timeline", headers=buyer)
        ).json()
        assert [(e["event"], e["detail"]) for e in timeline][-2:] == [
            ("refunded", first.json()["id"]),
            ("refunded", second.json()["id"]),
        ]
        listed = (await gateway.get(f"/api/v1/orders/{order['id']}/refunds", headers=buyer)).json()
        assert listed["total"] == 2

        async def mailed() -> list[dict[str, Any]]:
            return await notifications_of(gateway, buyer, "order_refunded")

        await eventually(lambda: _has(mailed, 2), message="no order_refunded e-mails")
        bodies = [item["body"] for item in await mailed()]
        assert any("1 x Brass desk lamp at 49.50 USD = 49.50 USD" in body for body in bodies)
        assert any("Refunded: 99.00 USD" in body for body in bodies)
        assert all("SW1Y 4JH London" in body for body in bodies)
        assert await stock_of(gateway, lamp["id"]) == (8, 0)

    async def test_who_and_when(self, gateway: httpx.AsyncClient, shop: Shop) -> None:
        admin = await shop.admin_headers()
        lamp = await new_product(gateway, admin, name="Lamp", price="10.00", stock=10)
        buyer = await customer(shop)
        order = await bought(gateway, buyer, [(lamp["id"], 1)])
        cancelled = await bought(gateway, buyer, [(lamp["id"], 1)])
        await gateway.post(f"/api/v1/orders/{cancelled['id']}/cancel", headers=buyer)

        assert_problem(await refund(gateway, buyer, order, [(lamp["id"], 1)]), 403)
        assert_problem(await refund(gateway, admin, cancelled, [(lamp["id"], 1)]), 409)
        assert_problem(
            await gateway.post(
                "/api/v1/orders/not-a-uuid/refunds",
                json={"lines": [{"product_id": lamp["id"], "quantity": 1}]},
                headers={**admin, **key()},
            ),
            422,
        )
        assert_problem(
            await gateway.post(
                f"/api/v1/orders/{order['id']}/refunds",
                json={"lines": [{"product_id": lamp["id"], "quantity": 10**12}], "restock": 1},
                headers={**admin, **key()},
            ),
            422,
        )


async def _stock_is(gateway: httpx.AsyncClient, product_id: str, expected: tuple[int, int]) -> bool:
    return await stock_of(gateway, product_id) == expected


async def _has(fetch: Any, count: int) -> bool:
    return len(await fetch()) >= count


@pytest.mark.postgres
class TestRefundRaceOnPostgres:
    async def test_two_refunds_of_the_last_unit_one_wins(
        self, pg_gateway: httpx.AsyncClient, pg_shop: Shop
    ) -> None:
        admin = await pg_shop.admin_headers()
        lamp = await new_product(pg_gateway, admin, name="Last lamp", price="10.00", stock=5)
        buyer = await customer(pg_shop)
        order = await bought(pg_gateway, buyer, [(lamp["id"], 1)])

        answers = await asyncio.gather(
            *(refund(pg_gateway, admin, order, [(lamp["id"], 1)], restock=True) for _ in range(2))
        )

        assert sorted(answer.status_code for answer in answers) == [201, 422]
        current = (await pg_gateway.get(f"/api/v1/orders/{order['id']}", headers=admin)).json()
        assert current["refunded_amount"] == "10.00"
        await eventually(lambda: _stock_is(pg_gateway, lamp["id"], (5, 0)), message="no restock")

    async def test_retries_racing_with_one_key_refund_and_restock_once(
        self, pg_gateway: httpx.AsyncClient, pg_shop: Shop
    ) -> None:
        admin = await pg_shop.admin_headers()
        lamp = await new_product(pg_gateway, admin, name="Raced lamp", price="10.00", stock=5)
        buyer = await customer(pg_shop)
        order = await bought(pg_gateway, buyer, [(lamp["id"], 2)])
        one_key = key()

        answers = await asyncio.gather(
            *(
                refund(
                    pg_gateway, admin, order, [(lamp["id"], 1)], restock=True, idempotency=one_key
                )
                for _ in range(4)
            )
        )

        # One refund; a retry that arrived while it ran is told so (409, Retry-After).
        statuses = [answer.status_code for answer in answers]
        assert set(statuses) <= {201, 409}, [answer.text for answer in answers]
        assert len({answer.json()["id"] for answer in answers if answer.status_code == 201}) == 1
        for answer in answers:
            if answer.status_code == 409:
                assert answer.headers["retry-after"] == "1"
        after = await refund(
            pg_gateway, admin, order, [(lamp["id"], 1)], restock=True, idempotency=one_key
        )
        assert after.status_code == 201
        current = (await pg_gateway.get(f"/api/v1/orders/{order['id']}", headers=admin)).json()
        assert current["refunded_amount"] == "10.00"
        await eventually(lambda: _stock_is(pg_gateway, lamp["id"], (4, 0)), message="no restock")
