"""A dead or hung service gives a fast 503 (or a 504 within the request's budget) at
the gateway, the rest keeps working, and the system recovers when it returns."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack import SERVICES, Stack, start_process, wait_ready
from service_testing import assert_problem, hung_process

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = pytest.mark.e2e


async def test_dead_product_service_is_a_fast_503_and_recovers(
    stack: Stack, gateway: httpx.AsyncClient
) -> None:
    spec = next(s for s in SERVICES if s.name == "product_service")
    assert (await gateway.get("/api/v1/products")).status_code == 200
    process = stack.processes[spec.name]
    process.terminate()
    process.wait(timeout=10)
    try:
        started = time.perf_counter()
        response = await gateway.get("/api/v1/products")
        assert time.perf_counter() - started < 1.0
        assert_problem(response, 503)

        # Repeated failures open the circuit: answered at once, with Retry-After.
        for _ in range(10):
            response = await gateway.get("/api/v1/products")
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1

        health = await gateway.get("/health")
        assert health.json()["status"] == "degraded"
        assert health.json()["services"]["product_service"] != "healthy"
        # The rest of the system keeps working.
        assert (await gateway.get("/api/v1/auth/jwks")).status_code == 200
    finally:
        stack.processes[spec.name] = start_process(
            spec, stack.ports[spec.name], stack.env, log_file=stack.log_file(spec.name)
        )
        await asyncio.to_thread(wait_ready, stack.url(spec.name))

    # After the breaker's reset time a probe goes through and closes it again.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await gateway.get("/api/v1/products")).status_code == 200:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the gateway did not recover after product_service came back")


#: What a client asks of the checkout and the stock reads below (X-Request-Budget-Ms):
#: shorter than the 10 s default, so that the test is quick; a client may shorten it.
BUDGET_MS = 3000


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await call
    return response, time.perf_counter() - started


async def restart(stack: Stack, name: str) -> None:
    spec = next(s for s in SERVICES if s.name == name)
    stack.processes[name] = start_process(
        spec, stack.ports[name], stack.env, log_file=stack.log_file(name)
    )
    await asyncio.to_thread(wait_ready, stack.url(name))


async def until(check: Callable[[], Awaitable[bool]], within: float, message: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(message)
        await asyncio.sleep(0.2)


async def test_a_hung_inventory_costs_a_budget_not_the_order_api(
    stack: Stack, gateway: httpx.AsyncClient, shop: Shop
) -> None:
    """inventory_service accepts connections and never answers: checkout answers
    503/504 within its budget, order reads and lists keep working (the gateway's breaker
    for order_service stays closed), stock reads fail fast once the gateway's breaker
    for inventory is open, and all of it recovers on its own when inventory is back."""
    admin = await shop.admin_headers()
    created = await gateway.post(
        "/api/v1/products",
        json={"sku": f"HUNG-{uuid.uuid4().hex[:8]}", "name": "Lamp", "price": "9.50",
              "category": "hung"},
        headers=admin,
    )  # fmt: skip
    product = created.json()["id"]
    assert (await gateway.put(f"/api/v1/inventory/{product}", json={"available": 50},
                              headers=admin)).status_code in (200, 201)  # fmt: skip
    email = f"hung-{uuid.uuid4().hex[:8]}@example.com"
    await shop.register(email)
    buyer = await shop.headers(email)
    budget = {"X-Request-Budget-Ms": str(BUDGET_MS)}

    def checkout(n: int) -> Awaitable[httpx.Response]:
        return gateway.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product, "quantity": 1}], "payment_token": "tok_ok"},
            headers={**buyer, **budget, "Idempotency-Key": f"hung-{uuid.uuid4()}-{n}"},
        )

    placed = (await checkout(0)).json()
    assert placed["status"] == "confirmed"

    inventory = stack.processes["inventory_service"]
    inventory.terminate()
    inventory.wait(timeout=10)
    try:
        with hung_process(stack.ports["inventory_service"]):
            await _while_inventory_hangs(gateway, checkout, buyer, placed, product, budget)
    finally:
        await restart(stack, "inventory_service")

    # Recovery on its own: the breakers let a probe through after their reset time.
    async def stock_answers() -> bool:
        return (await gateway.get(f"/api/v1/inventory/{product}")).status_code == 200

    await until(stock_answers, 15, "stock reads did not recover")

    async def checkout_confirms() -> bool:
        response = await checkout(99)
        return response.status_code == 201 and response.json()["status"] == "confirmed"

    await until(checkout_confirms, 15, "checkout did not recover")


async def _while_inventory_hangs(
    gateway: httpx.AsyncClient,
    checkout: Callable[[int], Awaitable[httpx.Response]],
    buyer: dict[str, str],
    placed: dict[str, Any],
    product: str,
    budget: dict[str, str],
) -> None:
    # More checkouts than the breakers' threshold (5): each one answered within the
    # client's budget, with one wait for the reservation (the stock release of a failed
    # checkout runs after the answer).
    for n in range(7):
        response, elapsed = await timed(checkout(n + 1))
        assert response.status_code in (503, 504), response.text
        assert_problem(response, response.status_code)
        assert elapsed < BUDGET_MS / 1000 + 0.5, f"checkout {n} took {elapsed:.1f} s"

    # order_service itself is fine: reads and lists answer, and fast.
    for _ in range(3):
        listed, elapsed = await timed(gateway.get("/api/v1/orders", headers=buyer))
        assert listed.status_code == 200, listed.text
        assert elapsed < 1.0
        one = await gateway.get(f"/api/v1/orders/{placed['id']}", headers=buyer)
        assert one.status_code == 200
        assert one.json()["status"] == "confirmed"

    # Stock reads: the first ones wait out their budget, together (five, the breaker's
    # threshold); after that the gateway's breaker for inventory answers at once.
    reads = await asyncio.gather(
        *(timed(gateway.get(f"/api/v1/inventory/{product}", headers=budget)) for _ in range(5))
    )
    for response, elapsed in reads:
        assert_problem(response, 504)
        assert elapsed < BUDGET_MS / 1000 + 0.5
    response, elapsed = await timed(gateway.get(f"/api/v1/inventory/{product}"))
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < 0.5
