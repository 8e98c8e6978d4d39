"""A dead service gives a fast 503 at the gateway, and the system recovers when it returns."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from devstack import SERVICES, Stack, start_process, wait_ready
from service_testing import assert_problem

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
