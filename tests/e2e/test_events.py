"""Events between the real processes: the catalog announces a product over RabbitMQ and
the inventory gives it a stock record, without either calling the other."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]


async def test_a_new_product_gets_an_empty_stock_record(
    gateway: httpx.AsyncClient, shop: Shop
) -> None:
    admin = await shop.admin_headers()
    created = await gateway.post(
        "/api/v1/products",
        json={
            "sku": f"EVT-{uuid.uuid4().hex[:10]}",
            "name": "Announced lamp",
            "price": "12.50",
            "category": "home",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]

    deadline = time.monotonic() + 15
    while (stock := await gateway.get(f"/api/v1/inventory/{product_id}")).status_code == 404:
        assert time.monotonic() < deadline, "product.created never reached the inventory"
        await asyncio.sleep(0.1)

    assert stock.status_code == 200, stock.text
    assert stock.json() == {"product_id": product_id, "available": 0, "reserved": 0}
