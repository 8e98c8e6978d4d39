"""Reservations that are neither committed nor released in time give their stock back."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import FastAPI

from inventory_service.config import Settings
from inventory_service.sweeper import release_expired_reservations
from service_testing import assert_problem
from shared.db import utcnow

if TYPE_CHECKING:
    from conftest import Inventory, StartApp


class TestExpirySweep:
    async def test_expired_reservation_gives_its_stock_back(
        self, inventory: Inventory, app: FastAPI
    ) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4}, ttl_seconds=1)

        released = await release_expired_reservations(
            app.state.database, now=utcnow() + timedelta(seconds=2)
        )

        assert released == 1
        assert await inventory.units(product_id) == (10, 0, 0)
        reservation = (await inventory.client.get(f"/internal/v1/reservations/{order_id}")).json()
        assert reservation["status"] == "released"
        assert reservation["reason"] == "expired"

    async def test_an_expired_reservation_cannot_be_committed(
        self, inventory: Inventory, app: FastAPI
    ) -> None:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        await inventory.reserve(order_id, {product_id: 4}, ttl_seconds=1)
        await release_expired_reservations(app.state.database, now=utcnow() + timedelta(seconds=2))

        response = await inventory.commit(order_id)

        body = assert_problem(response, 409)
        assert body["type"].endswith("/reservation-released")
        assert body["reason"] == "expired"
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_reservations_in_time_and_settled_ones_are_left_alone(
        self, inventory: Inventory, app: FastAPI
    ) -> None:
        product_id = await inventory.stocked_product(10)
        in_time, committed, expiring = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await inventory.reserve(in_time, {product_id: 1}, ttl_seconds=60)
        await inventory.reserve(committed, {product_id: 2}, ttl_seconds=1)
        await inventory.commit(committed)
        await inventory.reserve(expiring, {product_id: 3}, ttl_seconds=1)

        released = await release_expired_reservations(
            app.state.database, now=utcnow() + timedelta(seconds=2)
        )

        assert released == 1
        assert await inventory.units(product_id) == (7, 1, 2)
        statuses = {
            order_id: (await inventory.client.get(f"/internal/v1/reservations/{order_id}")).json()[
                "status"
            ]
            for order_id in (in_time, committed, expiring)
        }
        assert statuses == {in_time: "reserved", committed: "committed", expiring: "released"}

    async def test_every_batch_is_swept(self, inventory: Inventory, app: FastAPI) -> None:
        product_id = await inventory.stocked_product(10)
        for _ in range(7):
            await inventory.reserve(uuid.uuid4(), {product_id: 1}, ttl_seconds=1)

        released = await release_expired_reservations(
            app.state.database, batch_size=2, now=utcnow() + timedelta(seconds=2)
        )

        assert released == 7
        assert await inventory.units(product_id) == (10, 0, 0)

    async def test_concurrent_sweeps_and_commits_settle_each_reservation_once(
        self, inventory: Inventory, app: FastAPI
    ) -> None:
        product_id = await inventory.stocked_product(40)
        orders = [uuid.uuid4() for _ in range(20)]
        for order_id in orders:
            await inventory.reserve(order_id, {product_id: 2}, ttl_seconds=1)
        later = utcnow() + timedelta(seconds=2)

        results = await asyncio.gather(
            release_expired_reservations(app.state.database, batch_size=3, now=later),
            release_expired_reservations(app.state.database, batch_size=5, now=later),
            *(inventory.commit(order_id) for order_id in orders[::2]),
        )

        swept = results[0] + results[1]
        committed = sum(1 for r in results[2:] if r.status_code == 200)  # type: ignore[union-attr]
        assert swept + committed == 20
        units = await inventory.units(product_id)
        assert units == (swept * 2, 0, committed * 2)
        assert units.total == 40


class TestBackgroundSweeper:
    async def test_the_running_service_expires_reservations_by_itself(
        self, settings: Settings, start_app: StartApp, inventory: Inventory
    ) -> None:
        product_id = await inventory.stocked_product(5)
        fast = settings.model_copy(update={"reservation_sweep_seconds": 0.05})

        async with start_app(fast) as sweeping:
            assert not sweeping.state.sweeper.done()
            await inventory.reserve(uuid.uuid4(), {product_id: 5}, ttl_seconds=1)
            deadline = time.monotonic() + 10
            while (await inventory.units(product_id)).available != 5:
                assert time.monotonic() < deadline, "the reservation never expired"
                await asyncio.sleep(0.05)
            sweeper = sweeping.state.sweeper

        assert sweeper.done()
        assert await inventory.units(product_id) == (5, 0, 0)
