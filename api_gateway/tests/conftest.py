"""Real upstream services on real ports, and the gateway in front of them.

Each upstream is a small ASGI app served by uvicorn inside the test process: it echoes
what it received and has a few misbehaving routes (slow, streaming, endless, failing).
The gateway runs in-process behind `httpx.ASGITransport`, or behind uvicorn on a real
socket where the server itself matters (header limits, client disconnects).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api_gateway.config import Settings
from api_gateway.main import create_app
from api_gateway.routing import ROUTES
from service_testing import LocalTokens, free_port, running_app, serve
from shared.auth import TokenVerifier

UPSTREAM_NAMES = ("user", "product", "order", "inventory", "notification")


@dataclass
class Upstream:
    """A running fake service and the knobs tests turn on it."""

    name: str
    url: str = ""
    ready: bool = True
    #: Whether it serves its OpenAPI document (503 otherwise).
    documented: bool = True
    fail_status: int | None = None
    fail_headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    uploads_completed: int = 0
    endless_closed: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        self.ready = True
        self.documented = True
        self.fail_status = None
        self.fail_headers = {}
        self.requests.clear()
        self.uploads_completed = 0
        self.endless_closed = asyncio.Event()


def upstream_app(upstream: Upstream) -> Starlette:
    async def echo(request: Request) -> Response:
        upstream.requests.append((request.method, request.url.path))
        if upstream.fail_status is not None:
            return JSONResponse(
                {"failing": True}, status_code=upstream.fail_status, headers=upstream.fail_headers
            )
        body = await request.body()
        return JSONResponse(
            {
                "service": upstream.name,
                "method": request.method,
                "path": request.scope["path"],
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "query": request.scope["query_string"].decode("latin-1"),
                "headers": [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in request.headers.raw
                ],
                "body_length": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            },
            headers={"x-upstream": upstream.name},
        )

    async def upload(request: Request) -> Response:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        upstream.uploads_completed += 1
        return JSONResponse({"received": size})

    async def ready(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, status_code=200 if upstream.ready else 503)

    async def openapi(request: Request) -> Response:
        if not upstream.documented:
            return JSONResponse({"status": 503}, status_code=503)
        return JSONResponse(openapi_document(upstream.name))

    return Starlette(
        routes=[
            Route("/health/ready", ready),
            Route("/openapi.json", openapi),
            Route("/v1/{resource}/upload", upload, methods=["POST", "PUT"]),
            *misbehaving_routes(upstream),
            Route(
                "/{path:path}",
                echo,
                methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            ),
        ]
    )


async def event_stream(request: Request) -> Response:
    """Server-sent events, `count` of them, `gap` seconds apart."""
    count = int(request.query_params.get("count", "3"))
    gap = float(request.query_params.get("gap", "0.5"))

    async def generate() -> AsyncIterator[bytes]:
        for index in range(count):
            if index:
                await asyncio.sleep(gap)
            yield f"event: status\ndata: {index}\n\n".encode()

    return StreamingResponse(generate(), media_type="text/event-stream")


def misbehaving_routes(upstream: Upstream) -> list[Route]:
    """Routes that are slow, stream, never end, fail, redirect or set odd headers."""

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("seconds", "1")))
        return JSONResponse({"slow": True})

    async def stream(request: Request) -> Response:
        chunks = int(request.query_params.get("chunks", "5"))
        size = int(request.query_params.get("size", "1000"))

        async def generate() -> AsyncIterator[bytes]:
            for index in range(chunks):
                await asyncio.sleep(0.01)
                yield bytes([48 + index % 10]) * size

        return StreamingResponse(generate(), media_type="application/octet-stream")

    async def endless(request: Request) -> Response:
        async def generate() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick\n"
                    await asyncio.sleep(0.01)
            finally:
                upstream.endless_closed.set()

        return StreamingResponse(generate(), media_type="text/plain")

    async def status(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("seconds", "0")))
        return JSONResponse({"status": "as asked"}, status_code=int(request.path_params["code"]))

    async def redirect(request: Request) -> Response:
        return Response(
            status_code=307, headers={"location": f"{upstream.url}/v1/products/elsewhere"}
        )

    async def hop(request: Request) -> Response:
        return JSONResponse(
            {"hop": True},
            headers={
                "connection": "x-hop-named",
                "x-hop-named": "secret",
                "keep-alive": "timeout=5",
                "proxy-authenticate": "Basic",
                "trailer": "x-checksum",
                "upgrade": "h2c",
                "x-kept": "yes",
                "x-request-id": "upstream-made-this-up",
            },
        )

    async def cookie(request: Request) -> Response:
        response = JSONResponse({"cookie": request.headers.get("cookie")})
        response.set_cookie("session", "user-a-secret")
        return response

    async def shareable(request: Request) -> Response:
        """An answer with the `Cache-Control` asked for (`cache_control`), after
        `seconds`; each call is recorded and numbered."""
        upstream.requests.append((request.method, request.url.path))
        await asyncio.sleep(float(request.query_params.get("seconds", "0")))
        headers = {"cache-control": request.query_params.get("cache_control", "public, max-age=60")}
        if "cookie" in request.query_params:
            headers["set-cookie"] = "session=1"
        if "vary" in request.query_params:
            headers["vary"] = "accept-language"
        return JSONResponse(
            {"call": len(upstream.requests), "query": request.scope["query_string"].decode()},
            headers=headers,
        )

    return [
        Route("/v1/{resource}/shareable", shareable, methods=["GET", "PATCH", "DELETE"]),
        Route("/v1/{resource}/slow", slow),
        Route("/v1/{resource}/stream", stream),
        Route("/v1/{resource}/endless", endless),
        Route("/v1/{resource}/{id}/stream", event_stream),
        Route("/v1/{resource}/status/{code:int}", status),
        Route("/v1/{resource}/redirect", redirect),
        Route("/v1/{resource}/hop", hop),
        Route("/v1/{resource}/cookie", cookie),
    ]


def openapi_document(upstream: str) -> dict[str, Any]:
    """A small document in the shape FastAPI gives a service: a public list of each
    resource it owns, an item that needs a token, an internal route, a schema name every
    service uses for something else (`Page`) and one they all share (`Money`)."""
    resources = [resource for resource, route in ROUTES.items() if route.upstream == upstream]
    bearer = [{"HTTPBearer": []}]
    validation = {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
    page = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}}
    paths: dict[str, Any] = {"/internal/v1/secret": {"get": {"operationId": f"{upstream}_secret"}}}
    for resource in resources:
        paths[f"/v1/{resource}"] = {
            "get": {
                "operationId": f"list_{resource}",
                "responses": {"200": {"description": "A page", **page}, "422": validation},
            }
        }
        paths[f"/v1/{resource}/{{item_id}}"] = {
            "delete": {
                "operationId": f"delete_{resource}",
                "security": bearer,
                "responses": {"204": {"description": "Gone"}, "404": {"description": "None"}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": upstream, "version": "1.0.0"},
        "paths": paths,
        "components": {
            "schemas": {
                "Page": {"title": f"{upstream} page", "$ref": "#/components/schemas/Money"},
                "Money": {"type": "string", "pattern": "^[0-9]+[.][0-9]{2}$"},
                "HTTPValidationError": {"type": "object"},
                "Secret": {"type": "object"},
            },
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@pytest.fixture(scope="session")
async def upstream_servers() -> AsyncIterator[dict[str, Upstream]]:
    """One fake service per upstream, for the whole session."""
    running: dict[str, Upstream] = {}
    async with _serve_all(running, list(UPSTREAM_NAMES)):
        yield running


@pytest.fixture
def upstreams(upstream_servers: dict[str, Upstream]) -> dict[str, Upstream]:
    """The fake services, with their knobs back at the defaults."""
    for upstream in upstream_servers.values():
        upstream.reset()
    return upstream_servers


@asynccontextmanager
async def _serve_all(running: dict[str, Upstream], names: list[str]) -> AsyncIterator[None]:
    if not names:
        yield
        return
    upstream = Upstream(names[0])
    async with serve(upstream_app(upstream), lifespan="off") as url:
        upstream.url = url
        running[upstream.name] = upstream
        async with _serve_all(running, names[1:]):
            yield


@pytest.fixture
def closed_port_url() -> str:
    """A URL nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def gateway_settings(upstreams: dict[str, Upstream], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        f"{name}_service_url": upstream.url for name, upstream in upstreams.items()
    }
    values.update(rate_limit_per_minute=0, health_cache_seconds=0, environment="test")
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Gateway(httpx.AsyncClient):
    """A client of an in-process gateway; `app` is the gateway itself."""

    app: FastAPI


MakeGateway = Callable[..., Any]


@pytest.fixture
def make_gateway(upstreams: dict[str, Upstream], tokens: LocalTokens) -> MakeGateway:
    """`async with make_gateway(**settings) as gateway:` a started gateway and its client."""

    @asynccontextmanager
    async def make(
        *,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        local_tokens: bool = True,
        token_verifier: TokenVerifier | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Gateway]:
        """`local_tokens=False`: the real verifier, which asks the user service;
        `token_verifier`: that one instead of either."""
        verifier = token_verifier or (tokens.verifier() if local_tokens else None)
        app = create_app(gateway_settings(upstreams, **overrides), token_verifier=verifier)
        async with running_app(app):
            transport = httpx.ASGITransport(app=app, client=client)
            async with Gateway(transport=transport, base_url="http://gateway.test") as gateway:
                gateway.app = app
                yield gateway

    return make


@pytest.fixture(params=["aiohttp", "httpx"])
async def gateway(
    request: pytest.FixtureRequest, make_gateway: MakeGateway
) -> AsyncIterator[Gateway]:
    """A gateway with default settings, once with each HTTP transport."""
    async with make_gateway(http_transport=request.param) as client:
        yield client


@pytest.fixture
def serve_gateway(upstreams: dict[str, Upstream], tokens: LocalTokens) -> MakeGateway:
    """`async with serve_gateway(**settings) as url:` the gateway behind uvicorn."""

    @asynccontextmanager
    async def make(*, uvicorn_options: dict[str, Any] | None = None, **overrides: Any) -> Any:
        app = create_app(gateway_settings(upstreams, **overrides), token_verifier=tokens.verifier())
        async with serve(app, **(uvicorn_options or {})) as url:
            yield url

    return make


RawResponse = tuple[int, dict[str, str], bytes]


@pytest.fixture
def raw_request() -> Callable[..., Awaitable[RawResponse]]:
    """Call an ASGI app with a request path exactly as given (httpx would tidy `..` away)."""

    async def call(app: Any, method: str, raw_path: bytes) -> RawResponse:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"gateway.test")],
            "client": ("127.0.0.1", 50000),
            "server": ("gateway.test", 80),
            "state": {},
        }
        sent: list[dict[str, Any]] = []
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        start = sent[0]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], headers, body

    return call


def forged_hs256_token(tokens: LocalTokens) -> str:
    """A token "signed" with HMAC-SHA256 using the public key PEM as the secret: the
    classic algorithm-confusion attack (PyJWT refuses to make one, so it is made here)."""
    from cryptography.hazmat.primitives import serialization

    public_pem = tokens.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = json.loads(_b64decode(tokens.token().split(".")[1]))

    def part(data: dict[str, Any]) -> str:
        return _b64encode(json.dumps(data).encode())

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': tokens.kid})}.{part(claims)}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64encode(signature)}"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@pytest.fixture
def forge_hs256() -> Callable[[LocalTokens], str]:
    return forged_hs256_token
