"""Reservation outcomes are counted for Prometheus."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from httpx import AsyncClient

if TYPE_CHECKING:
    from conftest import Inventory


async def counted(client: AsyncClient, outcome: str, reason: str = "") -> float:
    text = (await client.get("/metrics")).text
    pattern = rf'^inventory_reservations_total{{outcome="{outcome}",reason="{reason}"}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_outcomes_are_counted(inventory: Inventory, client: AsyncClient) -> None:
    product_id = await inventory.stocked_product(2)
    before = {
        key: await counted(client, *key)
        for key in [
            ("reserved",),
            ("insufficient",),
            ("replayed",),
            ("committed",),
            ("released", "payment_declined"),
            ("released", "other"),
        ]
    }
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    await inventory.reserve(first, {product_id: 1})
    await inventory.reserve(first, {product_id: 1})
    await inventory.reserve(second, {product_id: 1})
    await inventory.reserve(third, {product_id: 1})
    await inventory.commit(first)
    await inventory.release(second, "payment_declined")
    await inventory.release(second, "payment_declined")
    await inventory.release(first, "warehouse_damage")

    after = {key: await counted(client, *key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("reserved",): 2,
        ("insufficient",): 1,
        ("replayed",): 1,
        ("committed",): 1,
        ("released", "payment_declined"): 1,
        ("released", "other"): 1,
    }
