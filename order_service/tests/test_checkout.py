"""Placing an order: catalog prices, stock reservations and sandbox payments, through the
public API, against the real product and inventory services."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service_testing import LocalTokens, assert_problem

if TYPE_CHECKING:
    from conftest import Customer, PlaceOrder, RecordedPayments, Shop


def error_locations(problem: dict[str, Any]) -> set[str]:
    """Every field a problem's `errors` point at."""
    return {str(part) for error in problem["errors"] for part in error["loc"]}


def at(timestamp: str) -> datetime:
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.tzinfo is not None, timestamp
    return parsed


async def order_count(client: httpx.AsyncClient, admin: dict[str, str]) -> int:
    total: int = (await client.get("/v1/orders", headers=admin)).json()["total"]
    return total


class TestConfirmedOrder:
    async def test_is_priced_from_the_catalog_and_takes_the_stock(
        self, place_order: PlaceOrder, shop: Shop, customer: Customer, client: httpx.AsyncClient
    ) -> None:
        keyboard = await shop.product(name="Keyboard", price="89.00", stock=10)
        mug = await shop.product(name="Mug", price="12.99", stock=5)

        response = await place_order((keyboard, 2), (mug, 3))

        assert response.status_code == 201, response.text
        order = response.json()
        assert uuid.UUID(order["id"])
        assert order["user_id"] == str(customer.id)
        assert order["status"] == "confirmed"
        assert order["cancel_reason"] is None
        assert order["currency"] == "USD"
        assert order["items"] == [
            {
                "product_id": keyboard["id"],
                "product_name": "Keyboard",
                "unit_price": "89.00",
                "quantity": 2,
                "line_total": "178.00",
            },
            {
                "product_id": mug["id"],
                "product_name": "Mug",
                "unit_price": "12.99",
                "quantity": 3,
                "line_total": "38.97",
            },
        ]
        assert order["total_amount"] == "216.97"
        assert at(order["created_at"]).utcoffset() == timedelta(0)
        assert at(order["updated_at"]) >= at(order["created_at"])
        assert await shop.stock(keyboard["id"]) == (8, 0)
        assert await shop.stock(mug["id"]) == (2, 0)
        # Sold in the call that took it: no reservation waits for a commit.
        reservation = await shop.reservation(order["id"])
        assert reservation is not None
        assert reservation["status"] == "committed"

        fetched = await client.get(f"/v1/orders/{order['id']}", headers=customer.auth)
        assert fetched.status_code == 200
        assert fetched.json() == order

    async def test_later_price_changes_do_not_touch_it(
        self, place_order: PlaceOrder, shop: Shop, customer: Customer, client: httpx.AsyncClient
    ) -> None:
        lamp = await shop.product(price="45.00")
        order = (await place_order((lamp, 1))).json()

        changed = await shop.products.patch(
            f"/v1/products/{lamp['id']}", json={"price": "99.00"}, headers=shop.admin
        )
        assert changed.status_code == 200

        again = (await client.get(f"/v1/orders/{order['id']}", headers=customer.auth)).json()
        assert again["items"][0]["unit_price"] == "45.00"
        assert again["total_amount"] == "45.00"
        assert (await place_order((lamp, 1))).json()["total_amount"] == "99.00"

    async def test_exact_decimal_totals(self, place_order: PlaceOrder, shop: Shop) -> None:
        # 0.1 + 0.2 is not 0.3 in binary floating point; money must still add up.
        a = await shop.product(price="0.10")
        b = await shop.product(price="0.20")
        order = (await place_order((a, 1), (b, 1))).json()
        assert order["total_amount"] == "0.30"

    async def test_large_order_fits(self, place_order: PlaceOrder, shop: Shop) -> None:
        expensive = await shop.product(price="1000000.00", stock=100)
        order = (await place_order((expensive, 100))).json()
        assert order["status"] == "confirmed"
        assert Decimal(order["total_amount"]) == Decimal("100000000.00")

    async def test_needs_a_token(self, client: httpx.AsyncClient, shop: Shop) -> None:
        product = await shop.product()
        response = await client.post(
            "/v1/orders", json=shop.body((product, 1)), headers={"Idempotency-Key": "k"}
        )
        assert_problem(response, 401)

    async def test_deactivated_customer_is_refused(
        self, client: httpx.AsyncClient, shop: Shop, tokens: LocalTokens
    ) -> None:
        product = await shop.product()
        headers = {**tokens.headers(active=False), "Idempotency-Key": "k"}
        response = await client.post("/v1/orders", json=shop.body((product, 1)), headers=headers)
        assert_problem(response, 401)
        assert await shop.stock(product["id"]) == (10, 0)


class TestRejectedOrder:
    """A request that cannot be an order is a 4xx, creates nothing and holds no stock."""

    @pytest.mark.parametrize(
        ("mutate", "location"),
        [
            (lambda body: body["items"][0].update(unit_price="0.01"), "unit_price"),
            (lambda body: body["items"][0].update(price="0.01"), "price"),
            (lambda body: body.update(total_amount="0.01"), "total_amount"),
            (lambda body: body.update(currency="EUR"), "currency"),
            (lambda body: body["items"][0].update(quantity=0), "quantity"),
            (lambda body: body["items"][0].update(quantity=101), "quantity"),
            (lambda body: body["items"][0].update(quantity=-1), "quantity"),
            (lambda body: body["items"][0].update(quantity="2"), "quantity"),
            (lambda body: body["items"][0].update(quantity=1.5), "quantity"),
            (lambda body: body["items"][0].update(quantity=True), "quantity"),
            (lambda body: body["items"][0].update(quantity=None), "quantity"),
            (lambda body: body["items"][0].update(product_id="not-a-uuid"), "product_id"),
            (lambda body: body["items"][0].pop("product_id"), "product_id"),
            (lambda body: body.update(items=[]), "items"),
            (lambda body: body.update(items=None), "items"),
            (lambda body: body.update(items=[body["items"][0]] * 2), "items"),
            (lambda body: body.pop("payment_token"), "payment_token"),
            (lambda body: body.update(payment_token=""), "payment_token"),
            (lambda body: body.update(payment_token=42), "payment_token"),
        ],
    )
    async def test_invalid_body(
        self,
        client: httpx.AsyncClient,
        shop: Shop,
        customer: Customer,
        admin: dict[str, str],
        mutate: Any,
        location: str,
    ) -> None:
        product = await shop.product()
        body = shop.body((product, 1))
        mutate(body)

        response = await client.post("/v1/orders", json=body, headers=customer.headers())

        problem = assert_problem(response, 422)
        assert location in error_locations(problem)
        assert await order_count(client, admin) == 0
        assert await shop.stock(product["id"]) == (10, 0)

    async def test_more_than_50_lines(
        self, client: httpx.AsyncClient, customer: Customer, admin: dict[str, str]
    ) -> None:
        body = {
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 1} for _ in range(51)],
            "payment_token": "tok_ok",
        }
        response = await client.post("/v1/orders", json=body, headers=customer.headers())
        assert "items" in error_locations(assert_problem(response, 422))
        assert await order_count(client, admin) == 0

    async def test_50_lines_are_fine(self, place_order: PlaceOrder, shop: Shop) -> None:
        products = [await shop.product(price="1.00", stock=1) for _ in range(50)]
        response = await place_order(*[(product, 1) for product in products])
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "confirmed"
        assert response.json()["total_amount"] == "50.00"

    @pytest.mark.parametrize("body", ["not json", "[]", '{"items": "x"}', ""])
    async def test_malformed_json(
        self, client: httpx.AsyncClient, customer: Customer, body: str
    ) -> None:
        response = await client.post(
            "/v1/orders",
            content=body,
            headers={**customer.headers(), "Content-Type": "application/json"},
        )
        assert_problem(response, 422)

    async def test_unknown_product(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
    ) -> None:
        known = await shop.product()
        unknown = {"id": str(uuid.uuid4())}

        response = await place_order((known, 1), (unknown, 1))

        problem = assert_problem(response, 422)
        assert problem["type"].endswith("product-unavailable")
        assert problem["errors"] == [
            {
                "loc": ["body", "items", 1, "product_id"],
                "msg": "no such product",
                "type": "product_unknown",
            }
        ]
        assert await order_count(client, admin) == 0
        assert await shop.stock(known["id"]) == (10, 0)

    async def test_inactive_product(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
    ) -> None:
        product = await shop.product()
        await shop.deactivate(product["id"])

        response = await place_order((product, 1))

        problem = assert_problem(response, 422)
        assert problem["errors"][0]["type"] == "product_inactive"
        assert await order_count(client, admin) == 0
        assert await shop.stock(product["id"]) == (10, 0)

    async def test_mixed_currencies(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
    ) -> None:
        dollars = await shop.product(currency="USD")
        euros = await shop.product(currency="EUR")

        response = await place_order((dollars, 1), (euros, 1))

        problem = assert_problem(response, 422)
        assert problem["type"].endswith("mixed-currencies")
        assert problem["currencies"] == ["EUR", "USD"]
        assert await order_count(client, admin) == 0

    @pytest.mark.parametrize("token", ["tok_unknown", "TOK_OK", "tok_ok ", "x" * 255])
    async def test_unknown_payment_token(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        token: str,
    ) -> None:
        product = await shop.product()

        response = await place_order((product, 1), token=token)

        problem = assert_problem(response, 422)
        assert "payment_token" in error_locations(problem)
        assert await order_count(client, admin) == 0
        assert await shop.stock(product["id"]) == (10, 0)

    async def test_a_refused_request_does_not_use_up_its_key(
        self, place_order: PlaceOrder, shop: Shop
    ) -> None:
        product = await shop.product()
        assert_problem(await place_order((product, 1), token="tok_typo", key="k-1"), 422)

        response = await place_order((product, 1), key="k-1")

        assert response.status_code == 201, response.text
        assert response.json()["status"] == "confirmed"


class TestCancelledAtCheckout:
    async def test_declined_payment_takes_no_stock(
        self, place_order: PlaceOrder, shop: Shop
    ) -> None:
        product = await shop.product(price="5.00", stock=3)

        response = await place_order((product, 2), token="tok_decline")

        assert response.status_code == 201, response.text
        order = response.json()
        assert order["status"] == "cancelled"
        assert order["cancel_reason"] == "payment_declined"
        assert order["total_amount"] == "10.00"
        assert await shop.stock(product["id"]) == (3, 0)
        # The payment comes first: inventory was never asked.
        assert await shop.reservation(order["id"]) is None

    async def test_short_stock_cancels_as_out_of_stock_and_refunds(
        self, place_order: PlaceOrder, shop: Shop, recorded_payments: RecordedPayments
    ) -> None:
        plenty = await shop.product(stock=10)
        scarce = await shop.product(stock=1)

        response = await place_order((plenty, 5), (scarce, 2))

        assert response.status_code == 201, response.text
        order = response.json()
        assert order["status"] == "cancelled"
        assert order["cancel_reason"] == "out_of_stock"
        # All or nothing: the line that was available is not taken either.
        assert await shop.stock(plenty["id"]) == (10, 0)
        assert await shop.stock(scarce["id"]) == (1, 0)
        # The payment taken before the stock was found short goes back, once.
        order_id = uuid.UUID(order["id"])
        assert recorded_payments.charged == [order_id]
        assert recorded_payments.refunded == [order_id]

    async def test_product_without_stock_record_is_out_of_stock(
        self, place_order: PlaceOrder, shop: Shop
    ) -> None:
        product = await shop.product(stock=None)
        order = (await place_order((product, 1))).json()
        assert (order["status"], order["cancel_reason"]) == ("cancelled", "out_of_stock")

    async def test_last_units_go_to_one_order_only(
        self, place_order: PlaceOrder, shop: Shop
    ) -> None:
        product = await shop.product(stock=1)
        first = (await place_order((product, 1))).json()
        second = (await place_order((product, 1))).json()
        assert first["status"] == "confirmed"
        assert (second["status"], second["cancel_reason"]) == ("cancelled", "out_of_stock")
        assert await shop.stock(product["id"]) == (0, 0)


class TestMetrics:
    async def test_outcomes_and_step_latencies_are_exported(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient
    ) -> None:
        product = await shop.product()
        await place_order((product, 1))
        await place_order((product, 1), token="tok_decline")

        text = (await client.get("/metrics")).text

        assert 'orders_total{cancel_reason="",status="confirmed"}' in text
        assert 'orders_total{cancel_reason="payment_declined",status="cancelled"}' in text
        steps = ("load_products", "create_order", "charge_payment", "take_stock", "settle_order")
        for step in steps:
            assert f'checkout_step_duration_seconds_count{{outcome="ok",step="{step}"}}' in text
