"""Many checkouts at once: the database settles every race, no unit is made or lost."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Inventory


class TestConcurrentReservations:
    async def test_fifty_buyers_for_ten_units(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)

        responses = await asyncio.gather(
            *(inventory.reserve(uuid.uuid4(), {product_id: 1}) for _ in range(50))
        )

        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: 10, 409: 40}, [r.text for r in responses if r.status_code >= 500]
        units = await inventory.units(product_id)
        assert units == (0, 10, 0)
        assert units.total == 10

    async def test_overlapping_orders_in_any_line_order_never_deadlock(
        self, inventory: Inventory
    ) -> None:
        rng = random.Random(20261125)
        products = [await inventory.stocked_product(25) for _ in range(6)]
        orders: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
        for _ in range(60):
            chosen = rng.sample(products, rng.randint(2, 5))
            rng.shuffle(chosen)  # the caller's line order must not matter
            orders[uuid.uuid4()] = {p: rng.randint(1, 3) for p in chosen}

        responses = await asyncio.gather(
            *(inventory.reserve(order_id, items) for order_id, items in orders.items())
        )

        assert {r.status_code for r in responses} <= {201, 409}, [
            r.text for r in responses if r.status_code not in (201, 409)
        ]
        reserved = [o for o, r in zip(orders, responses, strict=True) if r.status_code == 201]
        assert reserved, "some orders should fit"
        held = Counter[uuid.UUID]()
        for order_id in reserved:
            held.update(orders[order_id])
        for product_id in products:
            units = await inventory.units(product_id)
            assert units.reserved == held[product_id]
            assert units.available == 25 - held[product_id] >= 0
            assert units.total == 25

        # Settle them all at once, half sold and half given back, some twice.
        settle = []
        for index, order_id in enumerate(reserved):
            call = inventory.commit if index % 2 else inventory.release
            settle += [call(order_id), call(order_id)]
        rng.shuffle(settle)
        results = await asyncio.gather(*settle)

        assert {r.status_code for r in results} == {200}, [r.text for r in results]
        sold = Counter[uuid.UUID]()
        for order_id in reserved[1::2]:
            sold.update(orders[order_id])
        for product_id in products:
            units = await inventory.units(product_id)
            assert units == (25 - sold[product_id], 0, sold[product_id])

    async def test_reserving_while_the_admin_restocks(self, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(5)

        calls = [inventory.reserve(uuid.uuid4(), {product_id: 1}) for _ in range(30)]
        calls.insert(10, inventory.set_stock(product_id, 5))  # type: ignore[arg-type]
        results = await asyncio.gather(*calls)

        reservations = [r for r in results if not isinstance(r, dict)]
        assert {r.status_code for r in reservations} <= {201, 409}
        units = await inventory.units(product_id)
        assert units.reserved == sum(1 for r in reservations if r.status_code == 201)
        assert units.available >= 0
        assert 5 <= units.reserved <= 10
