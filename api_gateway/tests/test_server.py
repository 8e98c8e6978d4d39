"""The gateway behind uvicorn on a real socket: what the HTTP server itself does matters."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx
import pytest

from service_testing import assert_problem


async def raw_exchange(url: str, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send bytes exactly as given and read the answer until the server closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 20), read_timeout)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


class TestLargeHeaders:
    async def test_httptools_lets_the_gateway_answer_401(self, serve_gateway) -> None:
        async with (
            serve_gateway(uvicorn_options={"http": "httptools"}) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            response = await client.get(
                "/api/v1/users/me", headers={"Authorization": "Bearer " + "a" * 100_000}
            )
        assert_problem(response, 401)

    async def test_h11_refuses_a_head_over_16_kib_itself_with_a_clean_400(
        self, serve_gateway
    ) -> None:
        # h11 caps an incomplete request head at 16 KiB (`h11_max_incomplete_event_size`)
        # and uvicorn answers a plain-text 400 before the app runs: not a problem
        # document, but a clean 4xx. (A head that arrives in one read escapes the cap
        # and reaches the gateway's own 401; sending it in pieces makes the test exact.)
        async with serve_gateway(uvicorn_options={"http": "h11"}) as url:
            status, headers, _ = split_response(await send_big_head_slowly(url))
        assert status == 400
        assert headers["content-type"].startswith("text/plain")

    async def test_h11_with_a_larger_cap_lets_the_gateway_answer(self, serve_gateway) -> None:
        options = {"http": "h11", "h11_max_incomplete_event_size": 256 * 1024}
        async with serve_gateway(uvicorn_options=options) as url:
            status, headers, body = split_response(await send_big_head_slowly(url))
        assert status == 401
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["request_id"] == headers["x-request-id"]


async def send_big_head_slowly(url: str) -> bytes:
    """A request with a 100 KB Authorization header, its head sent in 10 KB pieces."""
    head = (
        b"GET /api/v1/users/me HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        b"Authorization: Bearer " + b"a" * 100_000 + b"\r\n\r\n"
    )
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)

    async def read_all() -> bytes:
        # Read while still writing: a server that refuses early answers, then resets.
        received = b""
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionError:
            pass
        return received

    reading = asyncio.create_task(read_all())
    try:
        for start in range(0, len(head), 10_000):
            writer.write(head[start : start + 10_000])
            await writer.drain()
            await asyncio.sleep(0.005)
    except ConnectionError:
        pass  # refused before the head was complete
    try:
        return await asyncio.wait_for(reading, 5)
    finally:
        writer.close()


class TestRawPaths:
    @pytest.mark.parametrize(
        "target",
        [
            b"/api/v1/users/../internal/x",
            b"/api/v1/products/..%2F..%2Finternal",
            b"/api/v1/users/%2e%2e/%2e%2e/internal/v1/users/1/status",
        ],
    )
    async def test_traversal_over_the_wire(self, serve_gateway, upstreams, target) -> None:
        async with serve_gateway() as url:
            raw = await raw_exchange(
                url,
                b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            )
        status, headers, body = split_response(raw)
        assert status in (400, 404)
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["request_id"] == headers["x-request-id"]
        assert all(not up.requests for up in upstreams.values())


class TestStreaming:
    async def test_response_streams_and_client_going_away_closes_upstream(
        self, serve_gateway, upstreams
    ) -> None:
        async with (
            serve_gateway() as url,
            httpx.AsyncClient(base_url=url) as client,
            client.stream("GET", "/api/v1/products/endless") as response,
        ):
            assert response.status_code == 200
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if received.count(b"tick") >= 3:
                    break
            # The client hung up: the gateway must stop reading the endless upstream.
            await asyncio.wait_for(upstreams["product"].endless_closed.wait(), 3)

    async def test_chunked_upload_over_the_limit_gets_a_413(
        self, serve_gateway, tokens, upstreams
    ) -> None:
        async def too_much():
            for _ in range(20):
                yield b"x" * 65536

        async with serve_gateway() as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/api/v1/products/upload", content=too_much(), headers=tokens.headers()
            )
        assert_problem(response, 413)
        assert response.headers["connection"] == "close"
        assert upstreams["product"].uploads_completed == 0

    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    async def test_large_download(self, serve_gateway, transport) -> None:
        async with (
            serve_gateway(http_transport=transport) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            response = await client.get("/api/v1/products/stream?chunks=50&size=65536")
        assert len(response.content) == 50 * 65536
