"""Refunds: by line and quantity, from paid orders, idempotent per key, settled by the
database when two race for the last unit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from order_service.models import outbox_event
from order_service.repository import OrderRepository
from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Customer, HeldPayments, PlaceOrder, Shop


async def refund(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    order: dict[str, Any],
    *lines: tuple[str, int],
    restock: bool = False,
    key: str | None = None,
    reason: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "lines": [
            {"product_id": product_id, "quantity": quantity} for product_id, quantity in lines
        ],
        "restock": restock,
    }
    if reason is not None:
        body["reason"] = reason
    headers = {**admin, "Idempotency-Key": key or str(uuid.uuid4())}
    return await client.post(f"/v1/orders/{order['id']}/refunds", json=body, headers=headers)


@pytest.fixture
async def order(place_order: PlaceOrder, shop: Shop) -> dict[str, Any]:
    """A confirmed order: 3 mugs at 12.99 and 1 teapot at 30.00."""
    mug = await shop.product(price="12.99", stock=10, name="Mug")
    teapot = await shop.product(price="30.00", stock=10, name="Teapot")
    placed: dict[str, Any] = (await place_order((mug, 3), (teapot, 1))).json()
    assert placed["status"] == "confirmed"
    return placed


def product(order: dict[str, Any], index: int) -> str:
    product_id: str = order["items"][index]["product_id"]
    return product_id


async def read(client: httpx.AsyncClient, order: dict[str, Any], who: dict[str, str]) -> Any:
    return (await client.get(f"/v1/orders/{order['id']}", headers=who)).json()


class TestRefund:
    async def test_pays_back_lines_at_the_price_paid(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        response = await refund(
            client, admin, order, (product(order, 0), 2), (product(order, 1), 1), reason="broken"
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["order_id"] == order["id"]
        assert body["amount"] == "55.98"
        assert body["lines"] == [
            {"product_id": product(order, 0), "quantity": 2, "amount": "25.98"},
            {"product_id": product(order, 1), "quantity": 1, "amount": "30.00"},
        ]
        assert (body["restock"], body["reason"]) == (False, "broken")
        assert (await read(client, order, admin))["refunded_amount"] == "55.98"

    async def test_partial_refunds_accumulate_up_to_what_was_bought(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        mug = product(order, 0)
        first = await refund(client, admin, order, (mug, 1))
        second = await refund(client, admin, order, (mug, 2))
        over = await refund(client, admin, order, (mug, 1))

        assert (first.status_code, second.status_code) == (201, 201)
        body = assert_problem(over, 422)
        assert body["errors"][0]["loc"] == ["body", "lines", 0, "quantity"]
        current = await read(client, order, admin)
        assert current["refunded_amount"] == "38.97"
        assert current["status"] == "confirmed"  # a refund changes no status

    async def test_more_than_bought_at_once_is_a_422_and_changes_nothing(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        response = await refund(
            client, admin, order, (product(order, 1), 1), (product(order, 0), 4)
        )

        body = assert_problem(response, 422)
        assert [error["loc"] for error in body["errors"]] == [["body", "lines", 1, "quantity"]]
        assert (await read(client, order, admin))["refunded_amount"] == "0.00"

    async def test_a_product_not_in_the_order_is_a_422(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        shop: Shop,
    ) -> None:
        other = await shop.product(stock=1)
        body = assert_problem(await refund(client, admin, order, (other["id"], 1)), 422)
        assert body["errors"][0]["loc"] == ["body", "lines", 0, "product_id"]

    async def test_shipped_and_delivered_orders_may_be_refunded(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        await client.post(f"/v1/orders/{order['id']}/ship", headers=admin)
        assert (await refund(client, admin, order, (product(order, 0), 1))).status_code == 201
        await client.post(f"/v1/orders/{order['id']}/deliver", headers=admin)
        assert (await refund(client, admin, order, (product(order, 0), 1))).status_code == 201

    async def test_pending_or_cancelled_orders_are_a_409(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        place_order: PlaceOrder,
        shop: Shop,
        customer: Customer,
        app: FastAPI,
    ) -> None:
        mug = await shop.product(stock=10)
        declined = (await place_order((mug, 1), token="tok_decline")).json()
        cancelled = (await place_order((mug, 1))).json()
        await client.post(f"/v1/orders/{cancelled['id']}/cancel", headers=customer.auth)
        # Made pending again, as while its checkout runs.
        async with app.state.database.sessionmaker() as session:
            await OrderRepository(session).set_values(
                uuid.UUID(declined["id"]), status="pending", cancel_reason=None
            )
            await session.commit()

        for target in (declined, cancelled):
            response = await refund(client, admin, target, (mug["id"], 1))
            body = assert_problem(response, 409)
            assert body["type"].endswith("order-status-conflict")

    async def test_customers_may_not_refund(
        self, client: httpx.AsyncClient, customer: Customer, order: dict[str, Any]
    ) -> None:
        response = await refund(client, customer.auth, order, (product(order, 0), 1))
        assert_problem(response, 403)

    async def test_an_unknown_order_is_a_404(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        unknown = {"id": "00000000-0000-4000-8000-000000000000"}
        assert_problem(await refund(client, admin, unknown, (product(order, 0), 1)), 404)

    @pytest.mark.parametrize(
        "body",
        [
            {"lines": []},
            {"lines": [{"product_id": "mug", "quantity": 1}]},
            {"lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 0}]},
            {"lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 10**20}]},
            {"lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": "1"}]},
            {"lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 1}] * 2},
            {
                "lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 1}],
                "restock": "yes",
            },
            {
                "lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 1}],
                "amount": "1.00",
            },
            {
                "lines": [{"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 1}],
                "reason": "x\x00y",
            },
            {"lines": "all"},
        ],
    )
    async def test_bad_bodies_are_a_422(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        body: dict[str, Any],
    ) -> None:
        response = await client.post(
            f"/v1/orders/{order['id']}/refunds",
            json=body,
            headers={**admin, "Idempotency-Key": "bad-body"},
        )
        assert_problem(response, 422)

    async def test_a_non_uuid_order_is_a_422_and_a_key_is_required(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        body = {"lines": [{"product_id": product(order, 0), "quantity": 1}]}
        no_key = await client.post(f"/v1/orders/{order['id']}/refunds", json=body, headers=admin)
        bad_id = await client.post(
            "/v1/orders/42/refunds", json=body, headers={**admin, "Idempotency-Key": "k"}
        )
        assert_problem(no_key, 400)
        assert_problem(bad_id, 422)


class TestIdempotency:
    async def test_the_same_key_replays_the_refund(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        first = await refund(client, admin, order, (product(order, 0), 1), key="r-1")
        replay = await refund(client, admin, order, (product(order, 0), 1), key="r-1")
        other = await refund(client, admin, order, (product(order, 0), 2), key="r-1")

        assert replay.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
        assert_problem(other, 422)
        assert (await read(client, order, admin))["refunded_amount"] == "12.99"

    async def test_concurrent_retries_refund_once(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        answers = await asyncio.gather(
            *(refund(client, admin, order, (product(order, 0), 3), key="r-2") for _ in range(4))
        )

        statuses = [answer.status_code for answer in answers]
        assert set(statuses) <= {201, 409}, [answer.text for answer in answers]
        made = [answer for answer in answers if answer.status_code == 201]
        assert made, statuses
        assert len({answer.json()["id"] for answer in made}) == 1
        for answer in answers:
            if answer.status_code == 409:
                assert assert_problem(answer, 409)["type"].endswith("idempotency-key-in-progress")
        assert (await read(client, order, admin))["refunded_amount"] == "38.97"
        # Once the first has finished, every retry is a replay.
        again = await refund(client, admin, order, (product(order, 0), 3), key="r-2")
        assert (again.status_code, again.json()) == (201, made[0].json())

    async def test_a_retry_while_the_first_still_runs_is_a_409(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        held_payments: HeldPayments,
    ) -> None:
        first = asyncio.create_task(refund(client, admin, order, (product(order, 0), 1), key="r-3"))
        await asyncio.wait_for(held_payments.called.wait(), timeout=10)

        retry = await refund(client, admin, order, (product(order, 0), 1), key="r-3")
        other_body = await refund(client, admin, order, (product(order, 0), 2), key="r-3")
        held_payments.release.set()
        made = await first
        after = await refund(client, admin, order, (product(order, 0), 1), key="r-3")

        assert assert_problem(retry, 409)["type"].endswith("idempotency-key-in-progress")
        assert retry.headers["retry-after"] == "1"
        assert_problem(other_body, 422)
        assert made.status_code == 201, made.text
        assert (after.status_code, after.json()) == (201, made.json())
        assert after.headers["idempotent-replayed"] == "true"
        assert (await read(client, order, admin))["refunded_amount"] == "12.99"

    async def test_a_refused_refund_leaves_its_key_free(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        too_many = await refund(client, admin, order, (product(order, 0), 4), key="r-4")
        fixed = await refund(client, admin, order, (product(order, 0), 3), key="r-4")

        assert_problem(too_many, 422)
        assert fixed.status_code == 201, fixed.text

    async def test_a_key_that_placed_an_order_is_not_a_refunds(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        shop: Shop,
    ) -> None:
        mug = await shop.product(stock=5)
        placed = await client.post(
            "/v1/orders", json=shop.body((mug, 1)), headers={**admin, "Idempotency-Key": "k"}
        )
        assert placed.status_code == 201, placed.text

        reused = await refund(client, admin, order, (product(order, 0), 1), key="k")

        assert assert_problem(reused, 422)["type"].endswith("idempotency-key-reused")
        assert (await read(client, order, admin))["refunded_amount"] == "0.00"


class TestConcurrency:
    async def test_two_refunds_of_the_last_unit_one_wins(
        self, client: httpx.AsyncClient, admin: dict[str, str], order: dict[str, Any]
    ) -> None:
        teapot = product(order, 1)  # one bought

        answers = await asyncio.gather(
            refund(client, admin, order, (teapot, 1), key="a"),
            refund(client, admin, order, (teapot, 1), key="b"),
        )

        assert sorted(answer.status_code for answer in answers) == [201, 422]
        assert (await read(client, order, admin))["refunded_amount"] == "30.00"


class TestRefundsList:
    async def test_owner_and_admin_see_the_refunds_newest_first(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        customer: Customer,
        make_customer: Callable[[], Customer],
    ) -> None:
        first = (await refund(client, admin, order, (product(order, 0), 1))).json()
        second = (await refund(client, admin, order, (product(order, 1), 1))).json()

        page = (await client.get(f"/v1/orders/{order['id']}/refunds", headers=customer.auth)).json()
        assert page["total"] == 2
        assert [item["id"] for item in page["items"]] == [second["id"], first["id"]]
        assert (await client.get(f"/v1/orders/{order['id']}/refunds", headers=admin)).json() == page
        stranger = make_customer()
        assert_problem(
            await client.get(f"/v1/orders/{order['id']}/refunds", headers=stranger.auth), 404
        )

    async def test_each_refund_is_on_the_timeline_and_staged_as_an_event(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        customer: Customer,
        app: FastAPI,
    ) -> None:
        made = (
            await refund(client, admin, order, (product(order, 0), 2), restock=True, reason="dent")
        ).json()

        timeline = (
            await client.get(f"/v1/orders/{order['id']}/timeline", headers=customer.auth)
        ).json()
        assert [(e["event"], e["status"], e["detail"]) for e in timeline][-1] == (
            "refunded",
            "confirmed",
            made["id"],
        )
        async with app.state.database.sessionmaker() as session:
            rows = await session.execute(select(outbox_event.c.type, outbox_event.c.payload))
            events = [json.loads(payload) for type_, payload in rows if type_ == "order.refunded"]
        assert [event["data"] for event in events] == [
            {
                "order_id": order["id"],
                "user_id": str(customer.id),
                "refund_id": made["id"],
                "amount": "25.98",
                "items": [
                    {
                        "product_id": product(order, 0),
                        "quantity": 2,
                        "product_name": "Mug",
                        "unit_price": "12.99",
                        "line_total": "25.98",
                    }
                ],
                "restock": True,
                "currency": "USD",
                "shipping_address": None,
                "reason": "dent",
            }
        ]

    async def test_a_refunded_order_cannot_be_cancelled(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        order: dict[str, Any],
        customer: Customer,
    ) -> None:
        await refund(client, admin, order, (product(order, 0), 1))

        body = assert_problem(
            await client.post(f"/v1/orders/{order['id']}/cancel", headers=customer.auth), 409
        )
        assert body["type"].endswith("order-has-refunds")
        assert (await read(client, order, admin))["status"] == "confirmed"
