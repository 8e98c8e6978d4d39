"""`GET /health`: every service's readiness in one answer."""

from __future__ import annotations

import time


class TestHealth:
    async def test_all_ready_is_healthy(self, gateway) -> None:
        response = await gateway.get("/health")
        assert response.status_code == 200
        assert response.json() == {
            "status": "healthy",
            "services": {
                "user_service": "healthy",
                "product_service": "healthy",
                "order_service": "healthy",
                "inventory_service": "healthy",
                "notification_service": "healthy",
            },
        }

    async def test_unready_and_unreachable_services_degrade_it(
        self, make_gateway, upstreams, closed_port_url
    ) -> None:
        upstreams["order"].ready = False
        async with make_gateway(notification_service_url=closed_port_url) as gateway:
            started = time.perf_counter()
            response = await gateway.get("/health")
            elapsed = time.perf_counter() - started
        assert response.status_code == 503
        assert response.json() == {
            "status": "degraded",
            "services": {
                "user_service": "healthy",
                "product_service": "healthy",
                "order_service": "unhealthy",
                "inventory_service": "healthy",
                "notification_service": "unreachable",
            },
        }
        assert elapsed < 1.0

    async def test_hanging_service_is_unreachable_within_the_timeout(self, make_gateway) -> None:
        # A listening socket that never answers: connect succeeds, the reply never comes.
        import socket

        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"http://127.0.0.1:{silent.getsockname()[1]}"
            async with make_gateway(inventory_service_url=url, health_timeout_seconds=0.3) as gw:
                started = time.perf_counter()
                response = await gw.get("/health")
                elapsed = time.perf_counter() - started
        assert response.json()["services"]["inventory_service"] == "unreachable"
        assert 0.3 <= elapsed < 1.0

    async def test_only_the_listed_services_are_checked(
        self, make_gateway, closed_port_url
    ) -> None:
        async with make_gateway(
            health_services="user_service, product_service", order_service_url=closed_port_url
        ) as gateway:
            response = await gateway.get("/health")
        assert response.status_code == 200
        assert response.json() == {
            "status": "healthy",
            "services": {"user_service": "healthy", "product_service": "healthy"},
        }

    async def test_result_is_cached_briefly(self, make_gateway, upstreams) -> None:
        async with make_gateway(health_cache_seconds=60) as gateway:
            assert (await gateway.get("/health")).status_code == 200
            upstreams["user"].ready = False
            assert (await gateway.get("/health")).status_code == 200

    async def test_circuit_state_does_not_hide_a_recovered_service(
        self, make_gateway, upstreams
    ) -> None:
        async with make_gateway(breaker_failure_threshold=1, breaker_reset_seconds=60) as gateway:
            upstreams["product"].fail_status = 503
            await gateway.get("/api/v1/products/1")
            upstreams["product"].fail_status = None
            response = await gateway.get("/health")
        assert response.json()["services"]["product_service"] == "healthy"
