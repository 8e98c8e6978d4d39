"""Per-client rate limits at the edge."""

from __future__ import annotations

import asyncio
import socket
import time
from ipaddress import ip_network

from limits.aio.storage import MemoryStorage

from api_gateway.ratelimit import ClientAddresses, RateLimiter, rate_limit_key
from service_testing import assert_problem


class TestRateLimit:
    async def test_over_the_limit_is_429_with_retry_after(self, make_gateway, upstreams) -> None:
        async with make_gateway(rate_limit_per_minute=3) as gateway:
            for _ in range(3):
                assert (await gateway.get("/api/v1/products/1")).status_code == 200
            response = await gateway.get("/api/v1/products/1")
        assert_problem(response, 429)
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert len(upstreams["product"].requests) == 3

    async def test_unroutable_requests_count_too(self, make_gateway) -> None:
        async with make_gateway(rate_limit_per_minute=2) as gateway:
            await gateway.get("/api/v1/nothing")
            await gateway.get("/internal/x")  # not under /api: neither routed nor counted
            await gateway.get("/api/v1/nothing")
            response = await gateway.get("/api/v1/products/1")
        assert_problem(response, 429)

    async def test_each_client_has_its_own_budget(self, make_gateway) -> None:
        async with make_gateway(rate_limit_per_minute=2) as gateway:
            for client in ("203.0.113.1", "203.0.113.2"):
                headers = {"X-Forwarded-For": client}
                for _ in range(2):
                    response = await gateway.get("/api/v1/products/1", headers=headers)
                    assert response.status_code == 200
            response = await gateway.get(
                "/api/v1/products/1", headers={"X-Forwarded-For": "203.0.113.1"}
            )
            assert_problem(response, 429)

    async def test_untrusted_peer_cannot_pick_its_bucket(self, make_gateway) -> None:
        async with make_gateway(rate_limit_per_minute=2, client=("198.51.100.9", 1000)) as gateway:
            statuses = [
                (
                    await gateway.get(
                        "/api/v1/products/1", headers={"X-Forwarded-For": f"10.0.0.{n}"}
                    )
                ).status_code
                for n in range(3)
            ]
        assert statuses == [200, 200, 429]

    async def test_health_and_metrics_are_not_limited(self, make_gateway) -> None:
        async with make_gateway(rate_limit_per_minute=1, health_services="user_service") as gateway:
            for path in ("/health/live", "/health/ready", "/metrics", "/health") * 3:
                assert (await gateway.get(path)).status_code == 200, path

    async def test_zero_turns_it_off(self, make_gateway) -> None:
        async with make_gateway(rate_limit_per_minute=0) as gateway:
            assert gateway.app.state.rate_limiter is None
            for _ in range(50):
                assert (await gateway.get("/api/v1/products/1")).status_code == 200


class TestClientAddress:
    def test_nearest_untrusted_hop_is_the_client(self) -> None:
        addresses = ClientAddresses((ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")))
        chain = b"1.1.1.1, 203.0.113.5, 10.0.0.3"
        assert addresses.client("127.0.0.1", chain, peer_trusted=True) == "203.0.113.5"
        assert addresses.client("127.0.0.1", b"not-an-ip", peer_trusted=True) == "127.0.0.1"
        assert addresses.client("198.51.100.1", chain, peer_trusted=False) == "198.51.100.1"

    def test_ipv6_clients_share_their_64(self) -> None:
        assert rate_limit_key("2001:db8:1:2:aaaa::1") == rate_limit_key("2001:db8:1:2:bbbb::2")
        assert rate_limit_key("2001:db8:1:2::1") != rate_limit_key("2001:db8:1:3::1")
        assert rate_limit_key("::ffff:192.0.2.1") == "192.0.2.1"
        assert rate_limit_key("192.0.2.1") == "192.0.2.1"


class TestMemoryStorage:
    async def test_expired_keys_are_swept_about_once_a_second(self, monkeypatch) -> None:
        sweeps = 0

        async def count_sweep(self) -> None:
            nonlocal sweeps
            sweeps += 1

        monkeypatch.setattr(MemoryStorage, "_MemoryStorage__expire_events", count_sweep)
        limiter = RateLimiter(10_000)
        try:
            for n in range(200):
                await limiter.check(f"10.0.{n // 256}.{n % 256}")
                await asyncio.sleep(0)
        finally:
            await limiter.aclose()
        # The library alone would start a sweep of every key after nearly every hit.
        assert sweeps == 1


class TestRedisDown:
    async def test_requests_go_through_quickly(self, make_gateway, closed_port_url) -> None:
        redis_url = closed_port_url.replace("http://", "redis://")
        async with make_gateway(rate_limit_per_minute=1, redis_url=redis_url) as gateway:
            started = time.perf_counter()
            for _ in range(5):
                assert (await gateway.get("/api/v1/products/1")).status_code == 200
        assert time.perf_counter() - started < 2.0

    async def test_a_hanging_redis_costs_one_timeout_not_one_per_request(
        self, make_gateway
    ) -> None:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            redis_url = f"redis://127.0.0.1:{silent.getsockname()[1]}"
            async with make_gateway(rate_limit_per_minute=1, redis_url=redis_url) as gateway:
                started = time.perf_counter()
                for _ in range(5):
                    assert (await gateway.get("/api/v1/products/1")).status_code == 200
                elapsed = time.perf_counter() - started
        assert elapsed < 1.5
