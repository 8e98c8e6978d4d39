"""Reading, cancelling, shipping and delivering orders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Customer, PlaceOrder, Shop


@pytest.fixture
async def confirmed(place_order: PlaceOrder, shop: Shop) -> dict[str, Any]:
    """A confirmed order of 2 units of a product stocked with 10."""
    product = await shop.product(stock=10)
    order: dict[str, Any] = (await place_order((product, 2))).json()
    assert order["status"] == "confirmed"
    return order


def product_of(order: dict[str, Any]) -> str:
    product_id: str = order["items"][0]["product_id"]
    return product_id


class TestListOrders:
    async def test_own_orders_newest_first(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        customer: Customer,
        make_customer: Callable[[], Customer],
    ) -> None:
        product = await shop.product(stock=10)
        placed = [(await place_order((product, 1))).json()["id"] for _ in range(3)]
        await place_order((product, 1), as_=make_customer())

        page = (await client.get("/v1/orders", headers=customer.auth)).json()

        assert page["total"] == 3
        assert (page["limit"], page["offset"]) == (20, 0)
        assert [order["id"] for order in page["items"]] == placed[::-1]
        assert all(order["user_id"] == str(customer.id) for order in page["items"])

    async def test_pages(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        product = await shop.product(stock=10)
        placed = [(await place_order((product, 1))).json()["id"] for _ in range(5)]

        seen = []
        for offset in (0, 2, 4):
            page = await client.get(
                "/v1/orders", params={"limit": 2, "offset": offset}, headers=customer.auth
            )
            assert page.json()["total"] == 5
            seen += [order["id"] for order in page.json()["items"]]

        assert seen == placed[::-1]

    async def test_admin_pages_by_cursor(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        make_customer: Callable[[], Customer],
    ) -> None:
        product = await shop.product(stock=10)
        placed = [
            (await place_order((product, 1), as_=make_customer())).json()["id"] for _ in range(3)
        ]

        first = (await client.get("/v1/orders", params={"limit": 2}, headers=admin)).json()
        await place_order((product, 1), as_=make_customer())  # newer: before the cursor
        params = {"limit": 2, "cursor": first["next_cursor"]}
        second = (await client.get("/v1/orders", params=params, headers=admin)).json()

        assert [o["id"] for o in first["items"] + second["items"]] == placed[::-1]
        assert (second["offset"], second["total"], "next_cursor" in second) == (2, 4, False)
        assert second["items"][0]["items"][0]["product_id"] == product["id"]

    async def test_admin_pages_one_status_by_cursor(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        make_customer: Callable[[], Customer],
    ) -> None:
        product = await shop.product(stock=10)
        declined = []
        for _ in range(3):
            await place_order((product, 1), as_=make_customer())
            response = await place_order((product, 1), as_=make_customer(), token="tok_decline")
            declined.append(response.json()["id"])

        params = {"status": "cancelled", "limit": 2}
        first = (await client.get("/v1/orders", params=params, headers=admin)).json()
        params["cursor"] = first["next_cursor"]
        second = (await client.get("/v1/orders", params=params, headers=admin)).json()

        assert [o["id"] for o in first["items"] + second["items"]] == declined[::-1]
        assert (first["total"], "next_cursor" in second) == (3, False)
        other_status = {"status": "confirmed", "cursor": first["next_cursor"]}
        refused = await client.get("/v1/orders", params=other_status, headers=admin)
        assert_problem(refused, 422)  # a cursor of another filter

    @pytest.mark.parametrize(
        "params",
        [
            {"limit": 0},
            {"limit": 101},
            {"offset": -1},
            {"status": "lost"},
            {"cursor": "not-a-cursor"},
            {"cursor": "abc", "offset": 2},
        ],
    )
    async def test_bad_query(
        self, client: httpx.AsyncClient, customer: Customer, params: dict[str, Any]
    ) -> None:
        response = await client.get("/v1/orders", params=params, headers=customer.auth)
        assert_problem(response, 422)

    async def test_admin_sees_every_order_and_can_filter(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        make_customer: Callable[[], Customer],
    ) -> None:
        product = await shop.product(stock=10)
        await place_order((product, 1), as_=make_customer())
        await place_order((product, 1), as_=make_customer(), token="tok_decline")

        everything = (await client.get("/v1/orders", headers=admin)).json()
        cancelled = (
            await client.get("/v1/orders", params={"status": "cancelled"}, headers=admin)
        ).json()

        assert everything["total"] == 2
        assert cancelled["total"] == 1
        assert cancelled["items"][0]["cancel_reason"] == "payment_declined"

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/v1/orders"), 401)


class TestOwnership:
    async def test_another_customer_cannot_see_or_cancel_it(
        self,
        confirmed: dict[str, Any],
        client: httpx.AsyncClient,
        shop: Shop,
        make_customer: Callable[[], Customer],
    ) -> None:
        stranger = make_customer()
        order_id = confirmed["id"]

        read = await client.get(f"/v1/orders/{order_id}", headers=stranger.auth)
        cancel = await client.post(f"/v1/orders/{order_id}/cancel", headers=stranger.auth)
        listed = await client.get("/v1/orders", headers=stranger.auth)

        assert_problem(read, 404)
        assert_problem(cancel, 404)
        assert listed.json()["total"] == 0
        # Not a different 404 from an order that does not exist: nothing leaks.
        missing = await client.get(f"/v1/orders/{uuid.uuid4()}", headers=stranger.auth)
        assert read.json()["title"] == missing.json()["title"]
        assert await shop.stock(product_of(confirmed)) == (8, 0)

    async def test_admin_reads_any_order(
        self, confirmed: dict[str, Any], client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.get(f"/v1/orders/{confirmed['id']}", headers=admin)
        assert response.status_code == 200
        assert response.json() == confirmed

    async def test_bad_id(self, client: httpx.AsyncClient, customer: Customer) -> None:
        assert_problem(await client.get("/v1/orders/not-a-uuid", headers=customer.auth), 422)
        assert_problem(await client.get(f"/v1/orders/{uuid.uuid4()}", headers=customer.auth), 404)


class TestCancel:
    async def test_owner_cancels_and_the_stock_comes_back(
        self, confirmed: dict[str, Any], client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        response = await client.post(f"/v1/orders/{confirmed['id']}/cancel", headers=customer.auth)

        assert response.status_code == 200, response.text
        order = response.json()
        assert (order["status"], order["cancel_reason"]) == ("cancelled", "cancelled_by_user")
        assert order["items"] == confirmed["items"]
        assert await shop.stock(product_of(confirmed)) == (10, 0)

    async def test_cancelling_twice_is_harmless(
        self, confirmed: dict[str, Any], client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        url = f"/v1/orders/{confirmed['id']}/cancel"
        first = await client.post(url, headers=customer.auth)

        second = await client.post(url, headers=customer.auth)

        assert second.status_code == 200
        assert second.json() == first.json()
        assert await shop.stock(product_of(confirmed)) == (10, 0)

    async def test_admin_cancels_any_order(
        self, confirmed: dict[str, Any], client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.post(f"/v1/orders/{confirmed['id']}/cancel", headers=admin)
        assert response.json()["status"] == "cancelled"

    async def test_checkout_cancellation_is_kept(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        customer: Customer,
    ) -> None:
        product = await shop.product()
        declined = (await place_order((product, 1), token="tok_decline")).json()

        response = await client.post(f"/v1/orders/{declined['id']}/cancel", headers=customer.auth)

        assert response.json()["cancel_reason"] == "payment_declined"
        assert await shop.stock(product["id"]) == (10, 0)

    @pytest.mark.parametrize("steps", [["ship"], ["ship", "deliver"]])
    async def test_too_late_once_shipped(
        self,
        confirmed: dict[str, Any],
        client: httpx.AsyncClient,
        customer: Customer,
        admin: dict[str, str],
        shop: Shop,
        steps: list[str],
    ) -> None:
        for step in steps:
            moved = await client.post(f"/v1/orders/{confirmed['id']}/{step}", headers=admin)
            assert moved.status_code == 200

        response = await client.post(f"/v1/orders/{confirmed['id']}/cancel", headers=customer.auth)

        problem = assert_problem(response, 409)
        expected = "shipped" if steps == ["ship"] else "delivered"
        assert problem["order_status"] == expected
        order = (await client.get(f"/v1/orders/{confirmed['id']}", headers=customer.auth)).json()
        assert order["status"] == expected
        assert await shop.stock(product_of(confirmed)) == (8, 0)


def at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


class TestShipping:
    async def test_ship_then_deliver(
        self, confirmed: dict[str, Any], client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        shipped = await client.post(f"/v1/orders/{confirmed['id']}/ship", headers=admin)
        assert shipped.status_code == 200
        assert shipped.json()["status"] == "shipped"
        # As instants: ISO strings compare wrongly when one has no fraction ("...37Z").
        assert at(shipped.json()["updated_at"]) >= at(confirmed["updated_at"])

        delivered = await client.post(f"/v1/orders/{confirmed['id']}/deliver", headers=admin)
        assert delivered.status_code == 200
        assert delivered.json()["status"] == "delivered"

    async def test_wrong_status_is_409(
        self,
        confirmed: dict[str, Any],
        client: httpx.AsyncClient,
        admin: dict[str, str],
        customer: Customer,
    ) -> None:
        url = f"/v1/orders/{confirmed['id']}"
        assert_problem(await client.post(f"{url}/deliver", headers=admin), 409)
        assert (await client.post(f"{url}/ship", headers=admin)).status_code == 200
        assert_problem(await client.post(f"{url}/ship", headers=admin), 409)
        assert (await client.post(f"{url}/deliver", headers=admin)).status_code == 200
        assert_problem(await client.post(f"{url}/deliver", headers=admin), 409)
        assert_problem(await client.post(f"{url}/ship", headers=admin), 409)

    async def test_cancelled_order_cannot_ship(
        self,
        confirmed: dict[str, Any],
        client: httpx.AsyncClient,
        admin: dict[str, str],
        customer: Customer,
    ) -> None:
        url = f"/v1/orders/{confirmed['id']}"
        await client.post(f"{url}/cancel", headers=customer.auth)

        problem = assert_problem(await client.post(f"{url}/ship", headers=admin), 409)
        assert problem["order_status"] == "cancelled"
        assert_problem(await client.post(f"{url}/deliver", headers=admin), 409)

    async def test_customers_cannot_ship(
        self, confirmed: dict[str, Any], client: httpx.AsyncClient, customer: Customer
    ) -> None:
        url = f"/v1/orders/{confirmed['id']}"
        assert_problem(await client.post(f"{url}/ship", headers=customer.auth), 403)
        assert_problem(await client.post(f"{url}/deliver", headers=customer.auth), 403)

    async def test_unknown_order_is_404(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        assert_problem(await client.post(f"/v1/orders/{uuid.uuid4()}/ship", headers=admin), 404)

    async def test_cancel_and_ship_at_once_have_one_winner(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        customer: Customer,
    ) -> None:
        product = await shop.product(stock=50)
        for _ in range(5):
            order = (await place_order((product, 2))).json()
            url = f"/v1/orders/{order['id']}"

            cancel, ship = await asyncio.gather(
                client.post(f"{url}/cancel", headers=customer.auth),
                client.post(f"{url}/ship", headers=admin),
            )

            assert sorted([cancel.status_code, ship.status_code]) == [200, 409]
            final = (await client.get(url, headers=customer.auth)).json()
            assert final["status"] == ("cancelled" if cancel.status_code == 200 else "shipped")
        confirmed = (
            await client.get("/v1/orders", params={"status": "shipped"}, headers=admin)
        ).json()["total"]
        assert await shop.stock(product["id"]) == (50 - 2 * confirmed, 0)
