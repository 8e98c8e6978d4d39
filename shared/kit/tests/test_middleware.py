"""The request middleware: request ids, budgets and traceparents read from the headers,
metrics by route and status, and a service's own middleware inside the defaults."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI, HTTPException
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import ServiceSettings
from shared.middleware import incoming_context
from shared.service import ServiceBuilder

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def builder() -> ServiceBuilder:
    settings = ServiceSettings(_env_file=None, service_name="probe_service", environment="test")
    return ServiceBuilder(settings, title="probe")


async def get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        return await client.get(path, headers=headers)


def served(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def timed(route: str) -> float:
    labels = {"method": "GET", "route": route}
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


class TestIncomingContext:
    def test_reads_the_first_of_each_header(self) -> None:
        request_id, traceparent, budget = incoming_context(
            [
                (b"x-request-id", b"first"),
                (b"traceparent", TRACEPARENT.encode()),
                (b"x-request-budget-ms", b"1500"),
                (b"x-request-id", b"second"),
                (b"x-request-budget-ms", b"10"),
            ]
        )
        assert (request_id, traceparent, budget) == ("first", TRACEPARENT, 1.5)

    def test_insane_values_are_replaced_or_ignored(self) -> None:
        request_id, traceparent, budget = incoming_context(
            [
                (b"x-request-id", b"no spaces allowed"),
                (b"traceparent", b"00-00000000000000000000000000000000-b7ad6b7169203331-01"),
                (b"x-request-budget-ms", b"-5"),
            ]
        )
        assert len(request_id) == 32
        assert int(request_id, 16) >= 0
        assert traceparent is None
        assert budget is None

    def test_each_request_gets_its_own_id(self) -> None:
        ids = {incoming_context([])[0] for _ in range(100)}
        assert len(ids) == 100


class TestRequestMetrics:
    async def test_counted_by_route_template_and_status(self) -> None:
        router = APIRouter()

        @router.get("/things/{thing_id}")
        async def thing(thing_id: int) -> dict[str, int]:
            if thing_id == 0:
                raise HTTPException(404)
            return {"id": thing_id}

        service = builder()
        service.add_routers(router)
        app = service.build()
        route = "/things/{thing_id}"
        ok, missing, observed = served(route, "200"), served(route, "404"), timed(route)

        for path in ("/things/1", "/things/2", "/things/0"):
            await get(app, path)

        assert served(route, "200") == ok + 2
        assert served(route, "404") == missing + 1
        assert timed(route) == observed + 3


class Teapot:
    """Answers /teapot itself, like a service's own fast path."""

    def __init__(self, app: ASGIApp, *, body: bytes) -> None:
        self.app = app
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/teapot":
            await send({"type": "http.response.start", "status": 418, "headers": []})
            await send({"type": "http.response.body", "body": self.body})
            return
        await self.app(scope, receive, send)


class TestServiceMiddleware:
    async def test_runs_inside_the_defaults(self) -> None:
        service = builder()
        service.add_health()
        service.add_middleware(Teapot, body=b"short and stout")
        app = service.build()

        answer = await get(app, "/teapot", **{"X-Request-ID": "tea-1"})
        passed_on = await get(app, "/health/live")

        assert answer.status_code == 418
        assert answer.content == b"short and stout"
        assert answer.headers["x-request-id"] == "tea-1"
        assert served("<unmatched>", "418") >= 1
        assert passed_on.status_code == 200
