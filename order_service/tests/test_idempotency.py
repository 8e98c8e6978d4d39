"""Idempotency-Key on POST /v1/orders: required, scoped to the user, replays the first
answer, refuses another body (422) and a request still running (409)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Customer, HeldPayments, PlaceOrder, Shop


async def orders_of(client: httpx.AsyncClient, customer: Customer) -> list[dict[str, object]]:
    items: list[dict[str, object]] = (await client.get("/v1/orders", headers=customer.auth)).json()[
        "items"
    ]
    return items


class TestKeyHeader:
    async def test_missing_key_is_400(
        self, client: httpx.AsyncClient, shop: Shop, customer: Customer
    ) -> None:
        product = await shop.product()

        response = await client.post(
            "/v1/orders", json=shop.body((product, 1)), headers=customer.auth
        )

        problem = assert_problem(response, 400)
        assert "Idempotency-Key" in problem["detail"]
        assert await orders_of(client, customer) == []
        assert await shop.stock(product["id"]) == (10, 0)

    @pytest.mark.parametrize(
        "key",
        [
            "",
            "k" * 256,
            "tab\there",
            "caf\u00e9".encode(),  # not ASCII
            "line\x7fdelete",
        ],
    )
    async def test_malformed_key_is_400(
        self, client: httpx.AsyncClient, shop: Shop, customer: Customer, key: str | bytes
    ) -> None:
        product = await shop.product()
        headers: dict[str, str | bytes] = {**customer.auth, "Idempotency-Key": key}

        response = await client.post("/v1/orders", json=shop.body((product, 1)), headers=headers)

        assert_problem(response, 400)
        assert await orders_of(client, customer) == []

    @pytest.mark.parametrize("key", ["k", "k" * 255, " spaced key ~!@#$%^&*() ", "a:b/c=d"])
    async def test_any_printable_key_up_to_255_is_fine(
        self, place_order: PlaceOrder, shop: Shop, key: str
    ) -> None:
        product = await shop.product()
        response = await place_order((product, 1), key=key)
        assert response.status_code == 201, response.text


class TestReplay:
    async def test_same_key_and_body_replays_the_first_answer(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        product = await shop.product(stock=5)
        first = await place_order((product, 2), key="order-1")
        assert first.status_code == 201

        again = await place_order((product, 2), key="order-1")

        assert again.status_code == first.status_code
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert len(await orders_of(client, customer)) == 1
        assert await shop.stock(product["id"]) == (3, 0)

    async def test_replay_tells_what_happened_then_not_now(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        product = await shop.product()
        first = await place_order((product, 1), key="k")
        order_id = first.json()["id"]
        cancel = await client.post(f"/v1/orders/{order_id}/cancel", headers=customer.auth)
        assert cancel.json()["status"] == "cancelled"

        again = await place_order((product, 1), key="k")

        assert again.content == first.content
        assert again.json()["status"] == "confirmed"

    async def test_declined_order_is_replayed_not_retried(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        product = await shop.product()
        first = await place_order((product, 1), token="tok_decline", key="k")
        assert first.json()["cancel_reason"] == "payment_declined"

        again = await place_order((product, 1), token="tok_decline", key="k")

        assert (again.status_code, again.content) == (201, first.content)
        assert len(await orders_of(client, customer)) == 1

    async def test_same_key_other_body_is_422(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        product = await shop.product(stock=5)
        other = await shop.product(stock=5)
        await place_order((product, 1), key="k")

        for lines, token in [
            (((product, 2),), "tok_ok"),
            (((other, 1),), "tok_ok"),
            (((product, 1),), "tok_decline"),
            (((product, 1), (other, 1)), "tok_ok"),
        ]:
            response = await place_order(*lines, token=token, key="k")
            problem = assert_problem(response, 422)
            assert problem["type"].endswith("idempotency-key-reused")

        assert len(await orders_of(client, customer)) == 1
        assert await shop.stock(product["id"]) == (4, 0)
        assert await shop.stock(other["id"]) == (5, 0)

    async def test_key_is_scoped_to_the_user(
        self,
        place_order: PlaceOrder,
        shop: Shop,
        client: httpx.AsyncClient,
        customer: Customer,
        make_customer: Callable[[], Customer],
    ) -> None:
        someone_else = make_customer()
        product = await shop.product(stock=5)
        mine = await place_order((product, 1), key="shared-key")

        theirs = await place_order((product, 1), key="shared-key", as_=someone_else)

        assert theirs.status_code == 201
        assert "idempotent-replayed" not in theirs.headers
        assert theirs.json()["id"] != mine.json()["id"]
        assert theirs.json()["user_id"] == str(someone_else.id)
        assert len(await orders_of(client, customer)) == 1
        assert len(await orders_of(client, someone_else)) == 1
        assert await shop.stock(product["id"]) == (3, 0)


class TestConcurrentDuplicates:
    async def test_twenty_at_once_make_one_order(
        self, place_order: PlaceOrder, shop: Shop, client: httpx.AsyncClient, customer: Customer
    ) -> None:
        product = await shop.product(stock=100)

        responses = await asyncio.gather(
            *(place_order((product, 3), key="double-click") for _ in range(20))
        )

        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {201, 409}, [r.text for r in responses]
        created = [response for response in responses if response.status_code == 201]
        assert created, statuses
        assert len({response.content for response in created}) == 1
        for response in responses:
            if response.status_code == 409:
                assert_problem(response, 409)
                assert response.headers["retry-after"] == "1"
        orders = await orders_of(client, customer)
        assert len(orders) == 1
        assert orders[0]["status"] == "confirmed"
        assert await shop.stock(product["id"]) == (97, 0)

        # Once the first has finished, every retry is a replay.
        again = await place_order((product, 3), key="double-click")
        assert (again.status_code, again.content) == (201, created[0].content)

    async def test_a_retry_while_the_first_still_runs_is_a_409(
        self, place_order: PlaceOrder, shop: Shop, held_payments: HeldPayments
    ) -> None:
        product = await shop.product(stock=5)
        first = asyncio.create_task(place_order((product, 1), key="held"))
        await asyncio.wait_for(held_payments.called.wait(), timeout=10)

        retry = await place_order((product, 1), key="held")
        held_payments.release.set()
        placed = await first
        after = await place_order((product, 1), key="held")

        assert assert_problem(retry, 409)["type"].endswith("idempotency-key-in-progress")
        assert retry.headers["retry-after"] == "1"
        assert (placed.status_code, placed.json()["status"]) == (201, "confirmed")
        assert (after.status_code, after.content) == (201, placed.content)
        assert await shop.stock(product["id"]) == (4, 0)
