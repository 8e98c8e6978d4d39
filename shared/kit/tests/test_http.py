"""The service client's calls go straight to its transport: what it answers comes back
whole, tied to its request, and nothing of one call (cookies) leaks into the next."""

from __future__ import annotations

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport

from shared.http import ServiceClient


async def test_a_call_returns_the_transports_answer_tied_to_its_request() -> None:
    seen: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"n": len(seen)}, headers={"set-cookie": "session=abc; Path=/"}
        )

    client = ServiceClient(
        {"catalog": "http://catalog.test"}, custom_transport=httpx.MockTransport(answer)
    )
    try:
        first = await client.request("catalog", "GET", "/v1/products", params={"q": "tea"})
        second = await client.request("catalog", "GET", "/v1/products")
    finally:
        await client.aclose()

    assert first.json() == {"n": 1}
    assert second.json() == {"n": 2}
    assert first.request is seen[0]
    assert str(first.request.url) == "http://catalog.test/v1/products?q=tea"
    # The client's default headers and the call's timeouts reach the transport.
    assert seen[0].headers["accept"] == "*/*"
    assert seen[0].extensions["timeout"]["read"] == client.timeout.read
    assert "cookie" not in seen[1].headers


async def test_an_idle_connection_is_dropped_before_the_service_would_close_it() -> None:
    """A call on a pooled connection the service is closing at that moment fails, and a
    POST is not retried: the client lets an idle connection go first."""
    server_keep_alive = uvicorn.Config(app="any:app").timeout_keep_alive

    for name in ("aiohttp", "httpx"):
        client = ServiceClient({"catalog": "http://catalog.test"}, transport=name)
        try:
            if isinstance(client.transport, AiohttpTransport):
                session = client.transport.get_client()
                client.transport.client = session  # closed with the client below
                kept = session.connector._keepalive_timeout  # type: ignore[union-attr]
            else:
                kept = client.transport._pool._keepalive_expiry  # type: ignore[attr-defined]
        finally:
            await client.aclose()
        assert kept is not None
        assert 0 < kept < server_keep_alive, name
