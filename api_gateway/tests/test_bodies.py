"""Request bodies stream through; bodies over the limit never reach a service."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from service_testing import assert_problem

LIMIT = 1024 * 1024


async def chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield b"x" * piece
        sent += piece


@pytest.fixture(params=["httpx", "aiohttp"])
async def any_gateway(request, make_gateway):
    """The gateway with each HTTP transport it can use."""
    async with make_gateway(http_transport=request.param) as gateway:
        yield gateway


class TestBodies:
    async def test_body_with_length_arrives_whole(self, any_gateway) -> None:
        body = bytes(range(256)) * 4000
        response = await any_gateway.post("/api/v1/auth/register", content=body)
        assert response.status_code == 200, response.text
        echoed = response.json()
        assert echoed["body_length"] == len(body)
        assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()

    async def test_chunked_body_arrives_whole(self, any_gateway) -> None:
        response = await any_gateway.post("/api/v1/auth/register", content=chunks(LIMIT))
        assert response.status_code == 200, response.text
        assert response.json()["body_length"] == LIMIT
        assert response.json()["body_sha256"] == hashlib.sha256(b"x" * LIMIT).hexdigest()

    async def test_json_body_and_content_type(self, any_gateway) -> None:
        response = await any_gateway.post("/api/v1/auth/refresh", json={"refresh_token": "t"})
        echoed = response.json()
        headers = dict(echoed["headers"])
        assert headers["content-type"] == "application/json"
        assert echoed["body_length"] == len(b'{"refresh_token":"t"}')

    async def test_post_without_body(self, any_gateway) -> None:
        response = await any_gateway.post("/api/v1/auth/token")
        assert response.json()["body_length"] == 0

    async def test_streamed_response_arrives_whole(self, any_gateway) -> None:
        response = await any_gateway.get("/api/v1/products/stream?chunks=40&size=5000")
        assert response.status_code == 200
        assert len(response.content) == 40 * 5000
        assert response.content[:5000] == b"0" * 5000
        assert response.content[-5000:] == b"9" * 5000


class TestBodyLimit:
    async def test_content_length_over_limit_is_refused_at_once(
        self, any_gateway, upstreams
    ) -> None:
        response = await any_gateway.post("/api/v1/auth/register", content=b"x" * (LIMIT + 1))
        assert_problem(response, 413)
        assert not upstreams["user"].requests

    async def test_a_body_a_little_over_keeps_the_connection_for_the_413(
        self, serve_gateway, upstreams
    ) -> None:
        # Over a real socket: the server reads and drops the rest of the body, so the
        # client gets the answer (not a reset) and can go on using the connection.
        async with serve_gateway() as url, httpx.AsyncClient(base_url=url) as client:
            for _ in range(3):
                response = await client.post(
                    "/api/v1/auth/register", content=b"x" * (LIMIT + 64 * 1024)
                )
                assert_problem(response, 413)
                assert "close" not in response.headers.get("connection", "")
            assert (await client.get("/api/v1/products/1")).status_code == 200
        assert not upstreams["user"].requests

    async def test_a_body_declared_far_over_closes_the_connection(self, any_gateway) -> None:
        response = await any_gateway.post(
            "/api/v1/auth/register",
            content=b"x",
            headers={"Content-Length": str(64 * LIMIT)},
        )
        assert_problem(response, 413)
        assert response.headers["connection"] == "close"

    async def test_chunked_body_over_limit_is_refused(self, any_gateway, tokens, upstreams) -> None:
        response = await any_gateway.post(
            "/api/v1/products/upload", content=chunks(LIMIT + 1), headers=tokens.headers()
        )
        assert_problem(response, 413)
        assert upstreams["product"].uploads_completed == 0

    async def test_body_at_the_limit_is_accepted(self, any_gateway, tokens, upstreams) -> None:
        response = await any_gateway.post(
            "/api/v1/products/upload", content=chunks(LIMIT), headers=tokens.headers()
        )
        assert response.json() == {"received": LIMIT}
        assert upstreams["product"].uploads_completed == 1

    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    async def test_refused_bodies_do_not_open_the_circuit(
        self, make_gateway, tokens, transport
    ) -> None:
        async with make_gateway(breaker_failure_threshold=2, http_transport=transport) as gateway:
            for _ in range(4):
                response = await gateway.post(
                    "/api/v1/products/upload", content=chunks(LIMIT + 1), headers=tokens.headers()
                )
                assert_problem(response, 413)
            response = await gateway.get("/api/v1/products/1")
            assert response.status_code == 200
