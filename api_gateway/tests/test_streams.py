"""Event streams (`GET /api/v1/orders/{id}/stream`) through the gateway: each event is
relayed as it comes, and quiet spells longer than the ordinary read timeout do not cut
the stream."""

from __future__ import annotations

import time

import httpx

from api_gateway.routing import resolve


def test_only_the_order_stream_is_a_stream() -> None:
    def stream(method: str, path: str) -> bool:
        return resolve(method, path.encode(), path).stream

    assert stream("GET", "/api/v1/orders/3f0c/stream")
    assert not stream("POST", "/api/v1/orders/3f0c/stream")
    assert not stream("GET", "/api/v1/orders/3f0c")
    assert not stream("GET", "/api/v1/orders//stream")
    assert not stream("GET", "/api/v1/products/3f0c/stream")


class TestStreams:
    async def test_each_event_is_relayed_as_it_comes(self, serve_gateway, tokens) -> None:
        """The ordinary read timeout is 0.3 s here; the stream is silent for 0.8 s at a
        time and still goes on, and no event waits for the one after it."""
        async with (
            serve_gateway(http_read_timeout=0.3) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            started = time.monotonic()
            arrivals: list[float] = []
            async with client.stream(
                "GET", "/api/v1/orders/42/stream?count=3&gap=0.8", headers=tokens.headers()
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        arrivals.append(time.monotonic() - started)
            ordinary = await client.get("/api/v1/orders/slow?seconds=0.8", headers=tokens.headers())

        assert len(arrivals) == 3
        assert arrivals[0] < 0.5
        assert 0.6 < arrivals[1] - arrivals[0] < 1.5
        assert ordinary.status_code == 504

    async def test_streams_have_a_pool_of_their_own(self, make_gateway) -> None:
        async with make_gateway(stream_max_connections=7) as gateway:
            state = gateway.app.state
            assert state.stream_client is not state.http_client
            assert state.stream_client.upstreams == state.http_client.upstreams
