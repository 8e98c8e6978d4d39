"""Watching an order live through the gateway, as `curl -N` would: the status at once,
shipping and delivery as they happen (also when another order_service process made the
change), the end after delivery, and nothing for anyone else's order."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack import SERVICES, Stack, start_process, wait_ready
from service_testing import assert_problem, free_port
from tests.e2e.test_events import place_order, stocked_product

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = pytest.mark.e2e


class EventStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next_status(self, within: float = 1.0) -> dict[str, Any]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(within):
            async for line in self.lines:
                if line.startswith(":"):
                    continue  # keep-alive comment
                if not line:
                    if fields:
                        break
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        assert fields.get("event") == "status", fields
        data: dict[str, Any] = json.loads(fields["data"])
        return data

    async def ended(self, within: float = 2.0) -> bool:
        async with asyncio.timeout(within):
            async for line in self.lines:
                assert not line or line.startswith(":"), line
        return True


@asynccontextmanager
async def watching(
    gateway: httpx.AsyncClient, order_id: str, headers: dict[str, str]
) -> AsyncIterator[EventStream]:
    async with gateway.stream(
        "GET", f"/api/v1/orders/{order_id}/stream", headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


async def customer_with_order(
    gateway: httpx.AsyncClient, shop: Shop
) -> tuple[dict[str, str], dict[str, Any]]:
    email = f"watcher-{uuid.uuid4().hex[:10]}@example.com"
    await shop.register(email)
    headers = await shop.headers(email)
    product_id = await stocked_product(gateway, await shop.admin_headers())
    return headers, await place_order(gateway, headers, product_id)


async def test_status_at_once_then_shipping_and_delivery_then_the_end(
    gateway: httpx.AsyncClient, shop: Shop
) -> None:
    headers, order = await customer_with_order(gateway, shop)
    admin = await shop.admin_headers()
    started = time.monotonic()
    latencies = []

    async with watching(gateway, order["id"], headers) as stream:
        first = await stream.next_status()
        assert time.monotonic() - started < 1.0
        assert first["status"] == "confirmed"
        assert (first["cancel_reason"], first["refunded_amount"]) == (None, "0.00")
        for action, status in (("ship", "shipped"), ("deliver", "delivered")):
            changed = time.monotonic()
            response = await gateway.post(f"/api/v1/orders/{order['id']}/{action}", headers=admin)
            assert response.status_code == 200, response.text
            event = await stream.next_status(within=1.0)
            latencies.append(time.monotonic() - changed)
            assert event["status"] == status
        assert await stream.ended()
    print(f"stream latency (change request sent -> event received): {latencies}")


async def test_someone_elses_order_is_404(gateway: httpx.AsyncClient, shop: Shop) -> None:
    _, order = await customer_with_order(gateway, shop)
    stranger, _ = await customer_with_order(gateway, shop)
    response = await gateway.get(f"/api/v1/orders/{order['id']}/stream", headers=stranger)
    assert_problem(response, 404)
    assert_problem(await gateway.get(f"/api/v1/orders/{order['id']}/stream"), 401)


@pytest.fixture
def second_order_service(stack: Stack) -> Iterator[str]:
    """Another order_service process on the same database, as a second replica."""
    spec = next(s for s in SERVICES if s.name == "order_service")
    port = free_port()
    process = start_process(spec, port, stack.env, log_file=stack.log_file("order_service_2"))
    try:
        wait_ready(f"http://127.0.0.1:{port}", process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_change_made_by_another_process_reaches_the_stream(
    gateway: httpx.AsyncClient, shop: Shop, second_order_service: str
) -> None:
    admin = await shop.admin_headers()
    latencies = []
    for _ in range(5):
        headers, order = await customer_with_order(gateway, shop)
        async with (
            watching(gateway, order["id"], headers) as stream,
            httpx.AsyncClient(base_url=second_order_service) as replica,
        ):
            assert (await stream.next_status())["status"] == "confirmed"
            changed = time.monotonic()
            response = await replica.post(f"/v1/orders/{order['id']}/ship", headers=admin)
            assert response.status_code == 200, response.text
            assert (await stream.next_status(within=1.0))["status"] == "shipped"
            latencies.append(time.monotonic() - changed)
    print(
        f"cross-process stream latency: median {statistics.median(latencies):.3f} s, "
        f"max {max(latencies):.3f} s"
    )
