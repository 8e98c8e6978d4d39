"""A service that is down, slow or failing gives a quick 503/504, never a hang or a 500."""

from __future__ import annotations

import asyncio
import time

import pytest

from service_testing import assert_problem, hung_server

TRANSPORTS = pytest.mark.parametrize("transport", ["httpx", "aiohttp"])


class TestUpstreamDown:
    @TRANSPORTS
    async def test_503_fast(self, make_gateway, closed_port_url, transport) -> None:
        async with make_gateway(
            product_service_url=closed_port_url, http_transport=transport
        ) as gateway:
            started = time.perf_counter()
            response = await gateway.get("/api/v1/products/1")
            elapsed = time.perf_counter() - started
        body = assert_problem(response, 503)
        assert body["type"].endswith("/upstream-unavailable")
        assert elapsed < 1.0

    async def test_services_not_deployed_yet_are_503(self, make_gateway, closed_port_url, tokens):
        async with make_gateway(order_service_url=closed_port_url) as gateway:
            response = await gateway.post("/api/v1/orders", json={}, headers=tokens.headers())
        assert_problem(response, 503)

    async def test_non_idempotent_request_is_sent_once(self, gateway, tokens, upstreams) -> None:
        upstreams["order"].fail_status = 503
        response = await gateway.post("/api/v1/orders", json={}, headers=tokens.headers())
        assert response.status_code == 503
        assert upstreams["order"].requests == [("POST", "/v1/orders")]

    async def test_idempotent_request_is_sent_once_too(self, gateway, tokens, upstreams) -> None:
        upstreams["order"].fail_status = 502
        await gateway.get("/api/v1/orders", headers=tokens.headers())
        assert upstreams["order"].requests == [("GET", "/v1/orders")]


class TestUpstreamSlow:
    @TRANSPORTS
    async def test_504_after_the_read_timeout(self, make_gateway, transport) -> None:
        async with make_gateway(http_read_timeout=0.3, http_transport=transport) as gateway:
            started = time.perf_counter()
            response = await gateway.get("/api/v1/products/slow?seconds=3")
            elapsed = time.perf_counter() - started
        body = assert_problem(response, 504)
        assert body["type"].endswith("/upstream-timeout")
        assert elapsed < 1.5

    async def test_slow_but_in_time_is_fine(self, make_gateway) -> None:
        async with make_gateway(http_read_timeout=1.0) as gateway:
            response = await gateway.get("/api/v1/products/slow?seconds=0.2")
        assert response.json() == {"slow": True}


class TestCircuitBreaker:
    async def test_opens_answers_503_with_retry_after_and_recovers(
        self, make_gateway, upstreams
    ) -> None:
        product = upstreams["product"]
        async with make_gateway(breaker_failure_threshold=3, breaker_reset_seconds=0.5) as gateway:
            product.fail_status = 503
            for _ in range(3):
                assert (await gateway.get("/api/v1/products/1")).status_code == 503
            assert len(product.requests) == 3

            response = await gateway.get("/api/v1/products/1")
            body = assert_problem(response, 503)
            assert body["type"].endswith("/circuit-open")
            assert int(response.headers["retry-after"]) >= 1
            assert len(product.requests) == 3  # refused without calling the service

            # Other services are not affected.
            assert (await gateway.get("/api/v1/inventory/1")).status_code == 200

            product.fail_status = None
            await asyncio.sleep(0.6)  # half-open: one probe goes through and closes it
            assert (await gateway.get("/api/v1/products/1")).status_code == 200
            assert (await gateway.get("/api/v1/products/1")).status_code == 200

    async def test_failed_probe_opens_it_again(self, make_gateway, upstreams) -> None:
        product = upstreams["product"]
        async with make_gateway(breaker_failure_threshold=2, breaker_reset_seconds=0.3) as gateway:
            product.fail_status = 503
            for _ in range(2):
                await gateway.get("/api/v1/products/1")
            await asyncio.sleep(0.35)
            assert (await gateway.get("/api/v1/products/1")).status_code == 503  # the probe
            assert len(product.requests) == 3
            response = await gateway.get("/api/v1/products/1")
            assert_problem(response, 503)
            assert len(product.requests) == 3

    async def test_client_errors_do_not_open_it(self, make_gateway, tokens) -> None:
        async with make_gateway(breaker_failure_threshold=2) as gateway:
            for _ in range(5):
                response = await gateway.get(
                    "/api/v1/products/status/404", headers=tokens.headers()
                )
                assert response.status_code == 404
            assert (await gateway.get("/api/v1/products/1")).status_code == 200

    async def test_failures_in_flight_together_open_it_when_nothing_answers(
        self, make_gateway, tokens
    ) -> None:
        failing = "/api/v1/products/status/503?seconds=0.2"
        async with make_gateway(breaker_failure_threshold=3, breaker_reset_seconds=5) as gateway:
            answers = await asyncio.gather(
                *(gateway.get(failing, headers=tokens.headers()) for _ in range(3))
            )
            assert [answer.status_code for answer in answers] == [503] * 3

            response = await gateway.get("/api/v1/products/1")
        assert assert_problem(response, 503)["type"].endswith("/circuit-open")

    async def test_one_dead_process_does_not_shut_out_its_healthy_peers(
        self, make_gateway, tokens
    ) -> None:
        """Requests in flight on one process of a service fail together when it dies,
        while its other processes keep answering: those failures do not open it."""
        dying = "/api/v1/products/status/503?seconds=0.5"
        async with make_gateway(breaker_failure_threshold=3, breaker_reset_seconds=5) as gateway:
            doomed = [
                asyncio.create_task(gateway.get(dying, headers=tokens.headers())) for _ in range(5)
            ]
            await asyncio.sleep(0.2)
            assert (await gateway.get("/api/v1/products/1")).status_code == 200
            assert [answer.status_code for answer in await asyncio.gather(*doomed)] == [503] * 5

            assert (await gateway.get("/api/v1/products/1")).status_code == 200
            # Failures of calls begun after that success count as ever.
            for _ in range(3):
                await gateway.get("/api/v1/products/status/503", headers=tokens.headers())
            response = await gateway.get("/api/v1/products/1")
        assert assert_problem(response, 503)["type"].endswith("/circuit-open")


class TestTimeBudget:
    @TRANSPORTS
    async def test_a_hung_service_is_a_504_within_the_budget(self, make_gateway, transport) -> None:
        async with (
            hung_server() as hung,
            make_gateway(
                product_service_url=hung, request_budget_seconds=1.0, http_transport=transport
            ) as gateway,
        ):
            started = time.perf_counter()
            response = await gateway.get("/api/v1/products/1")
            elapsed = time.perf_counter() - started
        assert_problem(response, 504)
        assert 0.9 < elapsed < 2.0

    async def test_the_budget_travels_and_shrinks(self, make_gateway) -> None:
        async with make_gateway(request_budget_seconds=2.0) as gateway:
            own = dict((await gateway.get("/api/v1/products/1")).json()["headers"])
            # A client may ask for less, never for more.
            short = await gateway.get("/api/v1/products/1", headers={"X-Request-Budget-Ms": "600"})
            long = await gateway.get("/api/v1/products/1", headers={"X-Request-Budget-Ms": "99999"})
        assert 1000 < int(own["x-request-budget-ms"]) <= 2000 - 250
        assert 0 < int(dict(short.json()["headers"])["x-request-budget-ms"]) <= 600 - 250
        assert int(dict(long.json()["headers"])["x-request-budget-ms"]) <= 2000 - 250


class TestHonestBreaker:
    async def test_a_relayed_dependency_failure_leaves_the_breaker_closed(
        self, make_gateway, upstreams, tokens
    ) -> None:
        order = upstreams["order"]
        async with make_gateway(breaker_failure_threshold=3) as gateway:
            # order_service is fine; the inventory it calls is not.
            order.fail_status, order.fail_headers = 504, {"X-Dependency-Failure": "1"}
            for _ in range(6):
                response = await gateway.get("/api/v1/orders", headers=tokens.headers())
                assert response.status_code == 504
            assert len(order.requests) == 6

            order.fail_status = None
            assert (await gateway.get("/api/v1/orders", headers=tokens.headers())).is_success

    async def test_its_own_failures_still_open_it(self, make_gateway, upstreams, tokens) -> None:
        order = upstreams["order"]
        async with make_gateway(breaker_failure_threshold=3) as gateway:
            order.fail_status = 504
            for _ in range(3):
                await gateway.get("/api/v1/orders", headers=tokens.headers())
            response = await gateway.get("/api/v1/orders", headers=tokens.headers())
        assert assert_problem(response, 503)["type"].endswith("/circuit-open")

    async def test_slow_answers_while_others_get_through_leave_it_closed(
        self, make_gateway
    ) -> None:
        """A burst that outlasts the timeout is load, not an outage: the upstream answered
        other calls while those waited."""
        async with make_gateway(http_read_timeout=0.5, breaker_failure_threshold=3) as gateway:

            async def quick_ones() -> None:
                for _ in range(8):
                    assert (await gateway.get("/api/v1/products/1")).status_code == 200
                    await asyncio.sleep(0.05)

            slow = [gateway.get("/api/v1/products/slow?seconds=2") for _ in range(6)]
            *answers, _ = await asyncio.gather(*slow, quick_ones())
            assert [answer.status_code for answer in answers] == [504] * 6
            assert (await gateway.get("/api/v1/products/1")).status_code == 200

    async def test_timeouts_with_no_answer_in_between_open_it(self, make_gateway) -> None:
        async with make_gateway(http_read_timeout=0.3, breaker_failure_threshold=3) as gateway:
            slow = [gateway.get("/api/v1/products/slow?seconds=2") for _ in range(3)]
            assert [answer.status_code for answer in await asyncio.gather(*slow)] == [504] * 3
            response = await gateway.get("/api/v1/products/1")
        assert assert_problem(response, 503)["type"].endswith("/circuit-open")
