"""The internal reservation API order_service's checkout saga calls."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from httpx import AsyncClient
from sqlalchemy import update

from inventory_service.models import Stock
from inventory_service.service import ReservationService, StockInconsistent
from service_testing import assert_problem
from shared.db import utcnow

if TYPE_CHECKING:
    from conftest import Inventory


def slug(body: dict[str, Any]) -> str:
    return str(body["type"]).rsplit("/", 1)[-1]


def at(timestamp: str) -> datetime:
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.utcoffset() == timedelta(0), timestamp
    return parsed


def lines(items: dict[uuid.UUID, int]) -> list[dict[str, Any]]:
    return [{"product_id": str(p), "quantity": q} for p, q in sorted(items.items())]


class TestReserve:
    async def test_every_line_is_held(self, inventory: Inventory) -> None:
        first = await inventory.stocked_product(10)
        second = await inventory.stocked_product(5)
        order_id = uuid.uuid4()
        before = utcnow()

        response = await inventory.reserve(order_id, {first: 3, second: 5})

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["order_id"] == str(order_id)
        assert body["status"] == "reserved"
        assert body["reason"] is None
        assert body["items"] == lines({first: 3, second: 5})
        expires_at = at(body["expires_at"]) - at(body["created_at"])
        assert expires_at == timedelta(seconds=900)
        assert at(body["created_at"]) >= before - timedelta(seconds=1)
        assert await inventory.units(first) == (7, 3, 0)
        assert await inventory.units(second) == (0, 5, 0)
        fetched = await inventory.client.get(f"/internal/v1/reservations/{order_id}")
        assert fetched.status_code == 200
        assert fetched.json() == body

    @pytest.mark.parametrize("how_many_lines", [1, 2])
    async def test_a_paid_order_s_units_are_sold_at_once(
        self, inventory: Inventory, how_many_lines: int
    ) -> None:
        products = [await inventory.stocked_product(10) for _ in range(how_many_lines)]
        items = dict.fromkeys(products, 4)
        order_id = uuid.uuid4()

        response = await inventory.reserve(order_id, items, sell=True)

        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["status"], body["items"]) == ("committed", lines(items))
        for product_id in products:
            assert await inventory.units(product_id) == (6, 0, 4)
        fetched = await inventory.client.get(f"/internal/v1/reservations/{order_id}")
        assert fetched.json() == body
        # A commit call as an earlier saga made it changes nothing.
        assert (await inventory.commit(order_id)).json()["status"] == "committed"
        # A repeat answers with it and sells nothing more.
        again = await inventory.reserve(order_id, items, sell=True)
        assert (again.status_code, again.json()) == (200, body)
        # Given back whole, as any sold reservation is.
        assert (await inventory.release(order_id, "out_of_stock")).json()["status"] == "released"
        for product_id in products:
            assert await inventory.units(product_id) == (10, 0, 0)

    @pytest.mark.parametrize("how_many_lines", [1, 2])
    async def test_a_short_sale_sells_nothing(
        self, inventory: Inventory, how_many_lines: int
    ) -> None:
        products = [await inventory.stocked_product(3) for _ in range(how_many_lines)]
        items = {**dict.fromkeys(products, 1), products[-1]: 4}

        response = await inventory.reserve(uuid.uuid4(), items, sell=True)

        assert_problem(response, 409)
        for product_id in products:
            assert await inventory.units(product_id) == (3, 0, 0)

    async def test_ttl_may_be_chosen_per_reservation(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(1)

        response = await inventory.reserve(uuid.uuid4(), {product_id: 1}, ttl_seconds=60)

        body = response.json()
        assert at(body["expires_at"]) - at(body["created_at"]) == timedelta(seconds=60)

    async def test_one_short_line_holds_nothing(self, inventory: Inventory) -> None:
        plenty = await inventory.stocked_product(10)
        scarce = await inventory.stocked_product(2)
        order_id = uuid.uuid4()

        response = await inventory.reserve(order_id, {plenty: 4, scarce: 3})

        body = assert_problem(response, 409)
        assert slug(body) == "insufficient-stock"
        assert body["product_id"] == str(scarce)
        assert await inventory.units(plenty) == (10, 0, 0)
        assert await inventory.units(scarce) == (2, 0, 0)
        assert_problem(await inventory.client.get(f"/internal/v1/reservations/{order_id}"), 404)

    async def test_the_first_short_product_in_id_order_is_named(self, inventory: Inventory) -> None:
        products = sorted([await inventory.stocked_product(0) for _ in range(3)])

        response = await inventory.reserve(uuid.uuid4(), dict.fromkeys(reversed(products), 1))

        assert assert_problem(response, 409)["product_id"] == str(products[0])

    async def test_product_without_a_record_is_insufficient(self, inventory: Inventory) -> None:
        stocked = await inventory.stocked_product(5)
        unknown = uuid.uuid4()

        response = await inventory.reserve(uuid.uuid4(), {stocked: 1, unknown: 1})

        body = assert_problem(response, 409)
        assert body["product_id"] == str(unknown)
        assert await inventory.units(stocked) == (5, 0, 0)

    async def test_the_last_units_may_be_reserved(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(3)

        assert (await inventory.reserve(uuid.uuid4(), {product_id: 3})).status_code == 201
        assert (await inventory.reserve(uuid.uuid4(), {product_id: 1})).status_code == 409
        assert await inventory.units(product_id) == (0, 3, 0)

    async def test_a_repeat_answers_the_same_and_holds_nothing_more(
        self, inventory: Inventory
    ) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        first = await inventory.reserve(order_id, {product_id: 4})

        again = await inventory.reserve(order_id, {product_id: 4}, ttl_seconds=5)

        assert first.status_code == 201
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert await inventory.units(product_id) == (6, 4, 0)

    async def test_a_repeat_with_other_lines_is_a_conflict(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        other = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        assert (await inventory.reserve(order_id, {product_id: 4})).status_code == 201

        for items in ({product_id: 5}, {product_id: 4, other: 1}, {other: 4}):
            response = await inventory.reserve(order_id, items)
            assert slug(assert_problem(response, 409)) == "reservation-mismatch"

        assert await inventory.units(product_id) == (6, 4, 0)
        assert await inventory.units(other) == (10, 0, 0)

    async def test_a_refused_order_may_try_again(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(1)
        order_id = uuid.uuid4()
        assert (await inventory.reserve(order_id, {product_id: 2})).status_code == 409

        await inventory.set_stock(product_id, 2)
        response = await inventory.reserve(order_id, {product_id: 2})

        assert response.status_code == 201, response.text
        assert await inventory.units(product_id) == (0, 2, 0)

    async def test_a_repeat_after_release_reports_the_release(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(5)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 2})
        await inventory.release(order_id, "payment_declined")

        again = await inventory.reserve(order_id, {product_id: 2})

        assert again.status_code == 200
        assert again.json()["status"] == "released"
        assert await inventory.units(product_id) == (5, 0, 0)

    async def test_concurrent_duplicates_reserve_once(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(100)
        order_id = uuid.uuid4()

        responses = await asyncio.gather(
            *(inventory.reserve(order_id, {product_id: 3}) for _ in range(20))
        )

        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 19 + [201], [r.text for r in responses]
        assert await inventory.units(product_id) == (97, 3, 0)

    @pytest.mark.parametrize(
        "change",
        [
            {"items": []},
            {"items": "nope"},
            {"items": [{"product_id": "prod-1", "quantity": 1}]},
            {"items": [{"product_id": "P"}]},
            {"items": [{"product_id": "P", "quantity": 0}]},
            {"items": [{"product_id": "P", "quantity": -1}]},
            {"items": [{"product_id": "P", "quantity": "1"}]},
            {"items": [{"product_id": "P", "quantity": 1.5}]},
            {"items": [{"product_id": "P", "quantity": 1_000_001}]},
            {"items": [{"product_id": "P", "quantity": 1, "price": "1.00"}]},
            {"items": [{"product_id": "P", "quantity": 1}, {"product_id": "P", "quantity": 2}]},
            {"order_id": "order-1"},
            {"order_id": None},
            {"ttl_seconds": 0},
            {"ttl_seconds": 3601},
            {"ttl_seconds": "60"},
            {"customer": "x"},
        ],
    )
    async def test_invalid_body_is_rejected(
        self, inventory: Inventory, change: dict[str, Any]
    ) -> None:
        product_id = await inventory.stocked_product(5)
        body: dict[str, Any] = {
            "order_id": str(uuid.uuid4()),
            "items": [{"product_id": str(product_id), "quantity": 1}],
            **change,
        }
        if isinstance(body["items"], list):
            body["items"] = [
                {**line, "product_id": str(product_id)} if line.get("product_id") == "P" else line
                for line in body["items"]
            ]

        response = await inventory.client.post("/internal/v1/reservations", json=body)

        assert assert_problem(response, 422)["errors"]
        assert await inventory.units(product_id) == (5, 0, 0)

    async def test_more_than_a_hundred_lines_are_rejected(self, inventory: Inventory) -> None:
        response = await inventory.reserve(uuid.uuid4(), {uuid.uuid4(): 1 for _ in range(101)})

        assert_problem(response, 422)

    async def test_unknown_reservation_is_not_found(self, client: AsyncClient) -> None:
        body = assert_problem(await client.get(f"/internal/v1/reservations/{uuid.uuid4()}"), 404)
        assert slug(body) == "reservation-not-found"
        assert_problem(await client.get("/internal/v1/reservations/nope"), 422)


class TestCommit:
    async def test_held_units_become_sold(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})

        response = await inventory.commit(order_id)

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "committed"
        assert response.json()["items"] == lines({product_id: 4})
        assert await inventory.units(product_id) == (6, 0, 4)
        public = await inventory.client.get(f"/v1/inventory/{product_id}")
        assert public.json() == {"product_id": str(product_id), "available": 6, "reserved": 0}

    async def test_every_line_of_a_reservation_of_several_is_sold(
        self, inventory: Inventory
    ) -> None:
        first = await inventory.stocked_product(10)
        second = await inventory.stocked_product(5)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {first: 3, second: 5})

        response = await inventory.commit(order_id)

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "committed"
        assert response.json()["items"] == lines({first: 3, second: 5})
        assert await inventory.units(first) == (7, 0, 3)
        assert await inventory.units(second) == (0, 0, 5)

    async def test_the_answer_is_the_reservation_as_stored(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})

        committed = await inventory.commit(order_id)

        stored = await inventory.client.get(f"/internal/v1/reservations/{order_id}")
        assert committed.json() == stored.json()

    async def test_stock_without_the_held_units_is_refused_and_nothing_changes(
        self, inventory: Inventory
    ) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        database = inventory.app.state.database
        async with database.sessionmaker() as session:
            # Edited by hand: the stock has fewer units reserved than the order holds.
            await session.execute(
                update(Stock).where(Stock.product_id == product_id).values(reserved=2)
            )
            await session.commit()

        async with database.sessionmaker() as session:
            with pytest.raises(StockInconsistent):
                await ReservationService(session).commit(order_id)

        assert await inventory.units(product_id) == (6, 2, 0)
        stored = await inventory.client.get(f"/internal/v1/reservations/{order_id}")
        assert stored.json()["status"] == "reserved"

    async def test_committing_again_changes_nothing(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        first = await inventory.commit(order_id)

        again = await inventory.commit(order_id)

        assert again.status_code == 200
        assert again.json() == first.json()
        assert await inventory.units(product_id) == (6, 0, 4)

    async def test_a_released_reservation_cannot_be_committed(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        await inventory.release(order_id, "cancelled_by_user")

        response = await inventory.commit(order_id)

        body = assert_problem(response, 409)
        assert slug(body) == "reservation-released"
        assert body["reason"] == "cancelled_by_user"
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_unknown_order_is_not_found(self, inventory: Inventory) -> None:
        assert_problem(await inventory.commit(uuid.uuid4()), 404)

    async def test_concurrent_commits_sell_once(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})

        responses = await asyncio.gather(*(inventory.commit(order_id) for _ in range(10)))

        assert {r.status_code for r in responses} == {200}
        assert await inventory.units(product_id) == (6, 0, 4)


class TestRelease:
    async def test_held_units_go_back(self, inventory: Inventory) -> None:
        first = await inventory.stocked_product(10)
        second = await inventory.stocked_product(3)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {first: 4, second: 3})

        response = await inventory.release(order_id, "payment_declined")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "released"
        assert response.json()["reason"] == "payment_declined"
        assert await inventory.units(first) == (10, 0, 0)
        assert await inventory.units(second) == (3, 0, 0)

    async def test_the_reason_defaults_to_cancelled(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        with_body, without_body = uuid.uuid4(), uuid.uuid4()
        await inventory.reserve(with_body, {product_id: 1})
        await inventory.reserve(without_body, {product_id: 1})

        empty = await inventory.client.post(
            f"/internal/v1/reservations/{with_body}/release", json={}
        )
        none = await inventory.client.post(f"/internal/v1/reservations/{without_body}/release")

        assert empty.json()["reason"] == "cancelled"
        assert none.json()["reason"] == "cancelled"
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_sold_units_go_back_when_a_confirmed_order_is_cancelled(
        self, inventory: Inventory
    ) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        await inventory.commit(order_id)

        response = await inventory.release(order_id, "cancelled_by_user")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "released"
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_releasing_again_changes_nothing(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        first = await inventory.release(order_id, "payment_declined")

        again = await inventory.release(order_id, "cancelled")

        assert again.status_code == 200
        assert again.json() == first.json()
        assert again.json()["reason"] == "payment_declined"
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_an_order_that_never_reserved_is_not_found(self, inventory: Inventory) -> None:
        body = assert_problem(await inventory.release(uuid.uuid4(), "payment_declined"), 404)
        assert slug(body) == "reservation-not-found"

    @pytest.mark.parametrize("reason", ["", "Cancelled", "has space", "x" * 65, 5, None])
    async def test_invalid_reason_is_rejected(self, inventory: Inventory, reason: Any) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})

        response = await inventory.client.post(
            f"/internal/v1/reservations/{order_id}/release", json={"reason": reason}
        )

        assert_problem(response, 422)
        assert await inventory.units(product_id) == (6, 4, 0)

    async def test_concurrent_releases_give_back_once(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4})
        await inventory.set_stock(product_id, 6)  # nothing left beyond the hold

        responses = await asyncio.gather(*(inventory.release(order_id) for _ in range(10)))

        assert {r.status_code for r in responses} == {200}
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_commit_racing_release_settles_one_way(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(50)
        orders = [uuid.uuid4() for _ in range(10)]
        for order_id in orders:
            await inventory.reserve(order_id, {product_id: 5})

        await asyncio.gather(
            *(call for o in orders for call in (inventory.commit(o), inventory.release(o)))
        )

        units = await inventory.units(product_id)
        assert units.reserved == 0
        assert units.total == 50
        statuses = [
            (await inventory.client.get(f"/internal/v1/reservations/{o}")).json()["status"]
            for o in orders
        ]
        # Every one ends released: either released before the commit (which then 409s)
        # or committed first and then released (its sold units given back).
        assert statuses == ["released"] * 10
        assert units.available == 50
