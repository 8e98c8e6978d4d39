"""Shipping addresses on orders, and each order's timeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Customer, PlaceOrder, Shop

ADDRESS = {
    "full_name": "Grace Hopper",
    "line1": "1 Navy Way",
    "line2": "Building 4",
    "city": "Arlington",
    "postal_code": "22202",
    "country": "US",
}


async def place_with_address(
    client: httpx.AsyncClient, customer: Customer, shop: Shop, address: Any
) -> httpx.Response:
    product = await shop.product(stock=10)
    body = {**shop.body((product, 1)), "shipping_address": address}
    return await client.post("/v1/orders", json=body, headers=customer.headers())


async def timeline(
    client: httpx.AsyncClient, order_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/orders/{order_id}/timeline", headers=headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


class TestShippingAddress:
    async def test_is_returned_on_the_order(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        placed = await place_with_address(client, customer, shop, ADDRESS)

        assert placed.status_code == 201, placed.text
        assert placed.json()["shipping_address"] == ADDRESS
        read = await client.get(f"/v1/orders/{placed.json()['id']}", headers=customer.auth)
        assert read.json()["shipping_address"] == ADDRESS

    async def test_line2_is_optional_and_the_address_too(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop, place_order: PlaceOrder
    ) -> None:
        without_line2 = {key: value for key, value in ADDRESS.items() if key != "line2"}

        placed = await place_with_address(client, customer, shop, without_line2)
        bare = await place_order((await shop.product(stock=10), 1))

        assert placed.json()["shipping_address"] == {**without_line2, "line2": None}
        assert bare.json()["shipping_address"] is None

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"country": "XX"}, "country"),  # not an assigned code
            ({"country": "us"}, "country"),
            ({"country": "USA"}, "country"),
            ({"country": 1}, "country"),
            ({"city": ""}, "city"),
            ({"line1": "x" * 201}, "line1"),
            ({"line1": "1 Navy Way\nDrop table"}, "line1"),
            ({"full_name": "Grace\x00Hopper"}, "full_name"),
            ({"postal_code": "22202\x1b[31m"}, "postal_code"),
            ({"line2": 7}, "line2"),
            ({"floor": "3"}, "floor"),  # unknown field
        ],
    )
    async def test_an_invalid_address_is_a_422(
        self,
        client: httpx.AsyncClient,
        customer: Customer,
        shop: Shop,
        change: dict[str, Any],
        field: str,
    ) -> None:
        response = await place_with_address(client, customer, shop, {**ADDRESS, **change})

        body = assert_problem(response, 422)
        assert ["body", "shipping_address", field] in [error["loc"] for error in body["errors"]]

    @pytest.mark.parametrize("address", ["1 Navy Way", [], {"country": "US"}])
    async def test_a_malformed_address_is_a_422(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop, address: Any
    ) -> None:
        assert_problem(await place_with_address(client, customer, shop, address), 422)

    async def test_the_address_is_part_of_the_idempotent_request(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop
    ) -> None:
        product = await shop.product(stock=10)
        body = {**shop.body((product, 1)), "shipping_address": ADDRESS}
        headers = customer.headers("same-key")

        first = await client.post("/v1/orders", json=body, headers=headers)
        replay = await client.post("/v1/orders", json=body, headers=headers)
        other = await client.post(
            "/v1/orders",
            json={**body, "shipping_address": {**ADDRESS, "city": "Boston"}},
            headers=headers,
        )

        assert replay.json() == first.json()
        assert_problem(other, 422)


class TestTimeline:
    async def test_follows_the_order_from_creation_to_delivery(
        self,
        client: httpx.AsyncClient,
        customer: Customer,
        shop: Shop,
        place_order: PlaceOrder,
        admin: dict[str, str],
    ) -> None:
        order = (await place_order((await shop.product(stock=10), 1))).json()
        for action in ("ship", "deliver"):
            response = await client.post(f"/v1/orders/{order['id']}/{action}", headers=admin)
            assert response.status_code == 200

        entries = await timeline(client, order["id"], customer.auth)

        assert [(e["event"], e["status"], e["detail"]) for e in entries] == [
            ("created", "pending", None),
            ("confirmed", "confirmed", None),
            ("shipped", "shipped", None),
            ("delivered", "delivered", None),
        ]
        moments = [entry["at"] for entry in entries]
        assert moments == sorted(moments)
        assert entries[0]["at"] == order["created_at"]

    async def test_a_cancellation_records_its_reason(
        self, client: httpx.AsyncClient, customer: Customer, shop: Shop, place_order: PlaceOrder
    ) -> None:
        product = await shop.product(stock=10)
        declined = (await place_order((product, 1), token="tok_decline")).json()
        confirmed = (await place_order((product, 1))).json()
        await client.post(f"/v1/orders/{confirmed['id']}/cancel", headers=customer.auth)
        short = (await place_order((await shop.product(stock=0), 1))).json()

        assert [
            (e["event"], e["detail"]) for e in await timeline(client, declined["id"], customer.auth)
        ] == [("created", None), ("cancelled", "payment_declined")]
        assert [
            (e["event"], e["detail"])
            for e in await timeline(client, confirmed["id"], customer.auth)
        ] == [("created", None), ("confirmed", None), ("cancelled", "cancelled_by_user")]
        assert (await timeline(client, short["id"], customer.auth))[-1]["detail"] == "out_of_stock"

    async def test_a_refused_change_records_nothing(
        self,
        client: httpx.AsyncClient,
        customer: Customer,
        shop: Shop,
        place_order: PlaceOrder,
        admin: dict[str, str],
    ) -> None:
        order = (await place_order((await shop.product(stock=10), 1))).json()

        assert_problem(await client.post(f"/v1/orders/{order['id']}/deliver", headers=admin), 409)
        await client.post(f"/v1/orders/{order['id']}/cancel", headers=customer.auth)
        # Cancelling again answers the order as it is, and records nothing more.
        await client.post(f"/v1/orders/{order['id']}/cancel", headers=customer.auth)

        events = [e["event"] for e in await timeline(client, order["id"], customer.auth)]
        assert events == ["created", "confirmed", "cancelled"]

    async def test_only_the_owner_and_administrators_see_it(
        self,
        client: httpx.AsyncClient,
        shop: Shop,
        place_order: PlaceOrder,
        admin: dict[str, str],
        make_customer: Callable[[], Customer],
    ) -> None:
        order = (await place_order((await shop.product(stock=10), 1))).json()

        assert len(await timeline(client, order["id"], admin)) == 2
        stranger = make_customer()
        assert_problem(
            await client.get(f"/v1/orders/{order['id']}/timeline", headers=stranger.auth), 404
        )
        assert_problem(await client.get(f"/v1/orders/{order['id']}/timeline"), 401)

    async def test_an_unknown_or_malformed_id(
        self, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        unknown = "00000000-0000-4000-8000-000000000000"
        assert_problem(
            await client.get(f"/v1/orders/{unknown}/timeline", headers=customer.auth), 404
        )
        assert_problem(
            await client.get("/v1/orders/not-a-uuid/timeline", headers=customer.auth), 422
        )
