"""The customer's cart: lines at the catalog's live prices and stock, and checkout
through the same saga and Idempotency-Key rules as POST /v1/orders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Customer, HeldPayments, OrderAppFactory, Server, Shop, SlowProxy

    ProxyFactory = Callable[[str], AbstractAsyncContextManager[SlowProxy]]

ADDRESS = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://order-service") as client:
        yield client


async def put_line(
    client: httpx.AsyncClient, who: Customer, product: dict[str, Any] | str, quantity: int
) -> httpx.Response:
    product_id = product if isinstance(product, str) else product["id"]
    return await client.put(
        f"/v1/cart/items/{product_id}", json={"quantity": quantity}, headers=who.auth
    )


async def cart_of(client: httpx.AsyncClient, who: Customer) -> dict[str, Any]:
    response = await client.get("/v1/cart", headers=who.auth)
    assert response.status_code == 200, response.text
    cart: dict[str, Any] = response.json()
    return cart


async def check_out(
    client: httpx.AsyncClient,
    who: Customer,
    *,
    token: str = "tok_ok",
    key: str | None = None,
    address: dict[str, Any] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"payment_token": token}
    if address is not None:
        body["shipping_address"] = address
    return await client.post("/v1/cart/checkout", json=body, headers=who.headers(key))


class TestCartLines:
    async def test_an_unused_cart_is_empty(
        self, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        assert await cart_of(client, customer) == {
            "items": [],
            "total_amount": "0.00",
            "currency": None,
            "updated_at": None,
        }

    async def test_shows_names_prices_and_stock_now(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(price="12.99", stock=7, name="Blue mug")
        tea = await shop.product(price="4.50", stock=None, name="Green tea")

        assert (await put_line(client, customer, mug, 2)).status_code == 200
        response = await put_line(client, customer, tea, 3)

        assert response.status_code == 200, response.text
        cart = response.json()
        assert cart["items"] == [
            {
                "product_id": mug["id"],
                "product_name": "Blue mug",
                "unit_price": "12.99",
                "quantity": 2,
                "line_total": "25.98",
                "available": 7,
            },
            {
                "product_id": tea["id"],
                "product_name": "Green tea",
                "unit_price": "4.50",
                "quantity": 3,
                "line_total": "13.50",
                "available": 0,  # no stock record: nothing to sell
            },
        ]
        assert cart["total_amount"] == "39.48"
        assert cart["currency"] == "USD"
        assert cart["updated_at"] is not None
        assert await cart_of(client, customer) == cart

    async def test_setting_a_line_again_replaces_its_quantity(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(price="10.00", stock=7)
        await put_line(client, customer, mug, 2)

        cart = (await put_line(client, customer, mug, 5)).json()

        assert [(item["quantity"], item["line_total"]) for item in cart["items"]] == [(5, "50.00")]

    async def test_a_price_change_shows_at_once(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(price="10.00", stock=7)
        await put_line(client, customer, mug, 2)

        changed = await shop.products.patch(
            f"/v1/products/{mug['id']}",
            json={"price": "8.00", "name": "Blue mug (sale)"},
            headers=shop.admin,
        )
        assert changed.status_code == 200, changed.text

        item = (await cart_of(client, customer))["items"][0]
        assert (item["product_name"], item["unit_price"], item["line_total"]) == (
            "Blue mug (sale)",
            "8.00",
            "16.00",
        )

    async def test_a_deactivated_product_shows_as_unavailable(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(stock=7)
        await put_line(client, customer, mug, 1)
        await shop.deactivate(mug["id"])

        assert (await cart_of(client, customer))["items"][0]["available"] == 0

    async def test_removing_lines_and_clearing(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug, tea = await shop.product(stock=7), await shop.product(stock=7)
        await put_line(client, customer, mug, 1)
        before = (await put_line(client, customer, tea, 1)).json()

        removed = await client.delete(f"/v1/cart/items/{mug['id']}", headers=customer.auth)
        missing = await client.delete(f"/v1/cart/items/{mug['id']}", headers=customer.auth)

        assert removed.status_code == 200
        assert [item["product_id"] for item in removed.json()["items"]] == [tea["id"]]
        assert datetime.fromisoformat(removed.json()["updated_at"]) > datetime.fromisoformat(
            before["updated_at"]
        )
        assert missing.json() == removed.json()  # nothing changed, not even updated_at
        cleared = await client.delete("/v1/cart", headers=customer.auth)
        assert cleared.status_code == 204
        assert (await cart_of(client, customer))["items"] == []

    async def test_a_cart_belongs_to_its_user_alone(
        self,
        client: httpx.AsyncClient,
        customer: Customer,
        shop: Shop,
        make_customer: Callable[[], Customer],
    ) -> None:
        mug = await shop.product(stock=7)
        await put_line(client, customer, mug, 1)
        stranger = make_customer()

        assert (await cart_of(client, stranger))["items"] == []
        await client.delete("/v1/cart", headers=stranger.auth)
        await client.delete(f"/v1/cart/items/{mug['id']}", headers=stranger.auth)
        assert len((await cart_of(client, customer))["items"]) == 1
        assert_problem(await client.get("/v1/cart"), 401)

    async def test_an_unknown_or_inactive_product_is_a_422(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        gone = await shop.product(stock=7)
        await shop.deactivate(gone["id"])

        for product_id in (gone["id"], "00000000-0000-4000-8000-000000000000"):
            body = assert_problem(await put_line(client, customer, product_id, 1), 422)
            assert body["errors"][0]["loc"] == ["path", "product_id"]
        assert (await cart_of(client, customer))["items"] == []

    @pytest.mark.parametrize(
        "body",
        [
            {"quantity": 0},
            {"quantity": 101},
            {"quantity": 10**30},
            {"quantity": "3"},
            {"quantity": 3.0},
            {"quantity": True},
            {"quantity": None},
            {},
            {"quantity": 1, "price": "0.01"},
            [],
        ],
    )
    async def test_bad_bodies_are_a_422(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop, body: Any
    ) -> None:
        mug = await shop.product(stock=7)
        response = await client.put(f"/v1/cart/items/{mug['id']}", json=body, headers=customer.auth)
        assert_problem(response, 422)

    async def test_a_non_uuid_product_is_a_422(
        self, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        assert_problem(await put_line(client, customer, "mug", 1), 422)
        assert_problem(await client.delete("/v1/cart/items/mug", headers=customer.auth), 422)


class TestFiftyLines:
    async def test_a_51st_line_is_a_409_and_a_full_cart_shows_in_one_call_each(
        self,
        order_app_factory: OrderAppFactory,
        slow_proxy_factory: ProxyFactory,
        product_server: Server,
        inventory_server: Server,
        customer: Customer,
        shop: Shop,
    ) -> None:
        products = [await shop.product(stock=3) for _ in range(51)]
        async with (
            slow_proxy_factory(product_server.url) as catalog,
            slow_proxy_factory(inventory_server.url) as inventory,
            order_app_factory(
                product_service_url=catalog.url, inventory_service_url=inventory.url
            ) as app,
            client_of(app) as client,
        ):
            for product in products[:50]:
                assert (await put_line(client, customer, product, 1)).status_code == 200
            full = await put_line(client, customer, products[50], 1)
            changed = await put_line(client, customer, products[0], 2)

            catalog.calls.clear()
            inventory.calls.clear()
            cart = await cart_of(client, customer)

        body = assert_problem(full, 409)
        assert body["type"].endswith("cart-full")
        assert changed.status_code == 200  # changing a line of a full cart is fine
        assert len(cart["items"]) == 50
        assert [item["available"] for item in cart["items"]] == [3] * 50
        assert catalog.calls == ["GET /internal/v1/products"]
        assert inventory.calls == ["GET /internal/v1/stock"]

    async def test_concurrent_additions_never_pass_50(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        products = [await shop.product(stock=3) for _ in range(52)]
        for product in products[:48]:
            await put_line(client, customer, product, 1)

        answers = await asyncio.gather(
            *(put_line(client, customer, product, 1) for product in products[48:])
        )

        assert sorted(answer.status_code for answer in answers) == [200, 200, 409, 409]
        assert len((await cart_of(client, customer))["items"]) == 50


class TestInventoryDown:
    async def test_the_cart_shows_with_available_null(
        self,
        order_app_factory: OrderAppFactory,
        closed_port: int,
        customer: Customer,
        shop: Shop,
        client: httpx.AsyncClient,
    ) -> None:
        mug = await shop.product(price="3.00", stock=7)
        await put_line(client, customer, mug, 2)

        async with (
            order_app_factory(inventory_service_url=f"http://127.0.0.1:{closed_port}") as app,
            client_of(app) as down,
        ):
            cart = await cart_of(down, customer)

        assert [(item["quantity"], item["available"]) for item in cart["items"]] == [(2, None)]
        assert cart["total_amount"] == "6.00"


class TestCheckout:
    async def test_a_confirmed_order_empties_the_cart(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(price="12.99", stock=7)
        tea = await shop.product(price="4.50", stock=7)
        await put_line(client, customer, mug, 2)
        await put_line(client, customer, tea, 1)

        response = await check_out(client, customer, address=ADDRESS)

        assert response.status_code == 201, response.text
        order = response.json()
        assert order["status"] == "confirmed"
        assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [
            (mug["id"], 2),
            (tea["id"], 1),
        ]
        assert order["total_amount"] == "30.48"
        assert order["shipping_address"] == {**ADDRESS, "line2": None}
        assert (await cart_of(client, customer))["items"] == []
        assert await shop.stock(mug["id"]) == (5, 0)
        read = await client.get(f"/v1/orders/{order['id']}", headers=customer.auth)
        assert read.json() == order

    async def test_the_order_takes_the_price_of_the_moment(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(price="10.00", stock=7)
        await put_line(client, customer, mug, 1)
        await shop.products.patch(
            f"/v1/products/{mug['id']}", json={"price": "11.00"}, headers=shop.admin
        )

        order = (await check_out(client, customer)).json()

        assert order["total_amount"] == "11.00"

    @pytest.mark.parametrize(
        ("stock", "token", "reason"),
        [(1, "tok_ok", "out_of_stock"), (7, "tok_decline", "payment_declined")],
    )
    async def test_any_other_outcome_keeps_the_cart(
        self,
        client: httpx.AsyncClient,
        customer: Customer,
        shop: Shop,
        stock: int,
        token: str,
        reason: str,
    ) -> None:
        mug = await shop.product(stock=stock)
        before = (await put_line(client, customer, mug, 2)).json()

        response = await check_out(client, customer, token=token)

        assert response.status_code == 201, response.text
        assert (response.json()["status"], response.json()["cancel_reason"]) == (
            "cancelled",
            reason,
        )
        assert await cart_of(client, customer) == before
        assert await shop.stock(mug["id"]) == (stock, 0)

    async def test_an_empty_cart_is_a_409(
        self, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        body = assert_problem(await check_out(client, customer), 409)
        assert body["type"].endswith("cart-empty")

    async def test_a_retry_with_the_key_replays_the_order(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(stock=7)
        await put_line(client, customer, mug, 2)

        first = await check_out(client, customer, key="cart-1")
        replay = await check_out(client, customer, key="cart-1")
        other_body = await check_out(client, customer, key="cart-1", token="tok_decline")
        orders = (await client.get("/v1/orders", headers=customer.auth)).json()

        assert replay.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
        assert_problem(other_body, 422)
        assert orders["total"] == 1
        assert await shop.stock(mug["id"]) == (5, 0)

    async def test_a_retry_while_the_first_still_runs_is_a_409(
        self,
        client: httpx.AsyncClient,
        customer: Customer,
        shop: Shop,
        held_payments: HeldPayments,
    ) -> None:
        mug = await shop.product(stock=7)
        await put_line(client, customer, mug, 2)
        first = asyncio.create_task(check_out(client, customer, key="cart-held"))
        await asyncio.wait_for(held_payments.called.wait(), timeout=10)

        retry = await check_out(client, customer, key="cart-held")
        held_payments.release.set()
        placed = await first
        after = await check_out(client, customer, key="cart-held")

        assert assert_problem(retry, 409)["type"].endswith("idempotency-key-in-progress")
        assert retry.headers["retry-after"] == "1"
        assert (placed.status_code, placed.json()["status"]) == (201, "confirmed")
        assert (after.status_code, after.content) == (201, placed.content)
        assert (await cart_of(client, customer))["items"] == []
        assert await shop.stock(mug["id"]) == (5, 0)

    async def test_a_key_of_post_orders_is_not_replayed_here(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(stock=7)
        await client.post("/v1/orders", json=shop.body((mug, 1)), headers=customer.headers("k"))
        await put_line(client, customer, mug, 1)

        assert_problem(await check_out(client, customer, key="k"), 422)

    async def test_refusals_are_those_of_post_orders(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        mug = await shop.product(stock=7)
        await put_line(client, customer, mug, 1)

        no_key = await client.post(
            "/v1/cart/checkout", json={"payment_token": "tok_ok"}, headers=customer.auth
        )
        bad_token = await check_out(client, customer, token="tok_unknown")
        bad_address = await check_out(client, customer, address={**ADDRESS, "country": "ZZ"})
        unknown_field = await client.post(
            "/v1/cart/checkout",
            json={"payment_token": "tok_ok", "items": []},
            headers=customer.headers(),
        )
        await shop.deactivate(mug["id"])
        inactive = await check_out(client, customer)

        assert_problem(no_key, 400)
        for refused in (bad_token, bad_address, unknown_field, inactive):
            assert_problem(refused, 422)
        assert len((await cart_of(client, customer))["items"]) == 1
