"""Telemetry of the real processes, as an operator sees it: one trace per checkout from the
gateway to the consumers of its events (exported by OTLP to a local receiver), Prometheus
series per route template on every process, and JSON log lines that carry the client's
request id and the trace."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from devstack import SERVICES
from tests.e2e.test_events import place_order, stocked_product, wait_for_notifications

if TYPE_CHECKING:
    from devstack import Stack
    from service_testing import OtlpReceiver, ReceivedSpan
    from tests.e2e.conftest import Shop

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]


def new_traceparent() -> tuple[str, str, str]:
    """A sampled W3C traceparent as a client would send it: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def wait_for_spans(
    otlp: OtlpReceiver, trace_id: str, needed: set[tuple[str, str]], within: float = 20.0
) -> list[ReceivedSpan]:
    """The trace's spans once it holds a span of each (service, name prefix) needed."""
    deadline = time.monotonic() + within
    while True:
        spans = otlp.trace(trace_id)
        missing = {
            (service, prefix)
            for service, prefix in needed
            if not any(s.service == service and s.name.startswith(prefix) for s in spans)
        }
        if not missing:
            return spans
        assert time.monotonic() < deadline, (
            f"missing spans {sorted(missing)}; got {sorted((s.service, s.name) for s in spans)}"
        )
        await asyncio.sleep(0.2)


def ancestry(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    """The services from `span` up to the root of its trace."""
    chain = [span.service]
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span.service)
    return chain


class TestTracing:
    async def test_a_checkout_is_one_trace_from_the_gateway_to_the_notification(
        self, gateway: httpx.AsyncClient, shop: Shop, otlp: OtlpReceiver
    ) -> None:
        product_id = await stocked_product(gateway, await shop.admin_headers())
        email = f"traced-{uuid.uuid4().hex[:10]}@example.com"
        await shop.register(email)
        headers = await shop.headers(email)
        traceparent, trace_id, client_span_id = new_traceparent()

        order = await place_order(gateway, {**headers, "traceparent": traceparent}, product_id)
        await wait_for_notifications(gateway, headers, {("order_confirmed", order["id"])})

        spans = await wait_for_spans(
            otlp,
            trace_id,
            {
                ("api_gateway", "POST /api/v1/orders/{path}"),
                ("order_service", "POST /v1/orders"),
                ("product_service", "GET"),
                ("inventory_service", "POST /internal/"),
                ("order_service", "publish order.confirmed"),
                ("notification_service", "process order.confirmed"),
            },
        )
        # The last batches of the other processes (children end before their parents,
        # so a trace is whole only once every process has exported).
        await asyncio.sleep(1.0)
        spans = otlp.trace(trace_id)
        by_id = {span.span_id: span for span in spans}
        roots = [span for span in spans if span.parent_span_id not in by_id]
        # One tree: its only root is the gateway's span, a child of the client's.
        assert [(r.service, r.parent_span_id) for r in roots] == [
            ("api_gateway", client_span_id)
        ], [(r.service, r.name, r.kind) for r in roots]
        consumed = next(
            span
            for span in spans
            if span.service == "notification_service" and span.name == "process order.confirmed"
        )
        assert consumed.kind == "SPAN_KIND_CONSUMER"
        # Through the outbox: consumer <- publish <- the order's request <- the gateway.
        chain = ancestry(consumed, by_id)
        assert chain[0] == "notification_service"
        assert chain[-1] == "api_gateway"
        assert "order_service" in chain
        publish = by_id[consumed.parent_span_id]
        assert publish.kind == "SPAN_KIND_PRODUCER"
        assert (
            publish.attributes["messaging.message.id"]
            == consumed.attributes["messaging.message.id"]
        )
        # The handlers' SQL belongs to the trace too.
        assert any(
            span.service == "notification_service" and span.kind == "SPAN_KIND_CLIENT"
            for span in spans
        ), f"the notification's SQL is traced: {sorted((s.service, s.name) for s in spans)}"

    async def test_polled_routes_make_no_traces(self, stack: Stack, otlp: OtlpReceiver) -> None:
        traceparent, trace_id, _ = new_traceparent()
        async with httpx.AsyncClient() as client:
            for spec in SERVICES:
                for path in ("/health/ready", "/metrics"):
                    response = await client.get(
                        stack.url(spec.name) + path, headers={"traceparent": traceparent}
                    )
                    assert response.status_code == 200
            # A traced request after them: once its span arrives, theirs would have too.
            await client.get(
                f"{stack.gateway_url}/api/v1/products", headers={"traceparent": traceparent}
            )
        spans = await wait_for_spans(otlp, trace_id, {("api_gateway", "GET")})
        served = {(span.service, span.name) for span in spans if span.kind == "SPAN_KIND_SERVER"}
        assert served == {
            ("api_gateway", "GET /api/v1/products/{path}"),
            ("product_service", "GET /v1/products"),
        }
        assert not [span for span in spans if "/health" in span.name or "metrics" in span.name]


def series(exposition: str, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of `name` in a Prometheus text exposition."""
    found = []
    for line in exposition.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} ", line)
        if match:
            found.append(dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1))))
    return found


def values(exposition: str, name: str, label: str) -> set[str]:
    return {labels[label] for labels in series(exposition, name)}


class TestMetrics:
    async def test_every_process_exposes_its_series_with_route_templates(
        self, gateway: httpx.AsyncClient, shop: Shop, stack: Stack
    ) -> None:
        product_id = await stocked_product(gateway, await shop.admin_headers())
        email = f"metered-{uuid.uuid4().hex[:10]}@example.com"
        await shop.register(email)
        headers = await shop.headers(email)
        order = await place_order(gateway, headers, product_id)
        await wait_for_notifications(gateway, headers, {("order_confirmed", order["id"])})
        assert (await gateway.get(f"/api/v1/products/{product_id}")).status_code == 200

        async with httpx.AsyncClient() as client:
            metrics = {
                spec.name: (await client.get(f"{stack.url(spec.name)}/metrics")).text
                for spec in SERVICES
            }

        for name, text in metrics.items():
            routes = {labels["route"] for labels in series(text, "http_requests_total")}
            assert routes, f"{name} counts its requests"
            assert not [
                route for route in routes if re.search(r"[0-9a-f]{8}-[0-9a-f]{4}", route)
            ], f"{name} labels requests by raw path: {routes}"
            assert series(text, "http_request_duration_seconds_bucket"), name
        assert {"route": "/api/v1/products/{path}", "method": "GET", "status": "200"} in series(
            metrics["api_gateway"], "http_requests_total"
        )
        assert {"method": "GET", "route": "/v1/products/{product_id}", "status": "200"} in series(
            metrics["product_service"], "http_requests_total"
        )
        # Calls to other services and their breakers: the gateway's and the order's.
        for name, upstreams in (
            ("api_gateway", {"product", "order", "inventory", "user"}),
            ("order_service", {"product", "inventory"}),
        ):
            called = {
                labels["upstream"] for labels in series(metrics[name], "upstream_requests_total")
            }
            assert upstreams <= called, (name, called)
            breakers = {
                labels["upstream"] for labels in series(metrics[name], "circuit_breaker_state")
            }
            assert upstreams <= breakers, (name, breakers)
        # The events: outbox of each producer, consumption and lag of each consumer.
        for name in ("user_service", "product_service", "order_service"):
            assert series(metrics[name], "outbox_backlog"), name
            assert series(metrics[name], "outbox_oldest_pending_age_seconds"), name
        assert {"type": "order.confirmed"} in series(
            metrics["order_service"], "events_published_total"
        )
        for name, type_ in (
            ("inventory_service", "product.created"),
            ("notification_service", "order.confirmed"),
        ):
            consumed = series(metrics[name], "events_consumed_total")
            assert {"type": type_, "outcome": "processed"} in consumed, name
            assert series(metrics[name], "event_handling_duration_seconds_bucket"), name
            assert series(metrics[name], "events_queue_depth") == [{"service": name}]
            assert series(metrics[name], "events_dead_letter_depth") == [{"service": name}]
            reasons = {
                labels["reason"] for labels in series(metrics[name], "events_dead_lettered_total")
            }
            assert reasons == {"unparseable", "failed"}, name
        # The domain: reservations (stock conflicts are `insufficient`) and final statuses.
        outcomes = values(metrics["inventory_service"], "inventory_reservations_total", "outcome")
        assert {"reserved", "insufficient", "committed", "released"} <= outcomes
        assert {"status": "confirmed", "cancel_reason": ""} in series(
            metrics["order_service"], "orders_total"
        )


class TestLogs:
    async def test_log_lines_are_json_with_the_clients_request_id_and_no_secrets(
        self, gateway: httpx.AsyncClient, shop: Shop, stack: Stack
    ) -> None:
        email = f"logged-{uuid.uuid4().hex[:10]}@example.com"
        password = f"pw-{secrets.token_hex(8)}"
        await shop.register(email, password)
        tokens = await shop.login(email, password)
        request_id = f"client-{uuid.uuid4().hex}"
        me = await gateway.get(
            "/api/v1/users/me",
            headers={
                "Authorization": f"Bearer {tokens['access_token']}",
                "X-Request-ID": request_id,
            },
        )
        assert me.status_code == 200
        assert me.headers["x-request-id"] == request_id

        async def lines_with_request_id() -> dict[str, list[dict[str, object]]]:
            found: dict[str, list[dict[str, object]]] = {}
            for spec in SERVICES:
                log_file = stack.log_file(spec.name)
                assert log_file is not None
                for line in log_file.read_text().splitlines():
                    entry = json.loads(line)  # every line, not only ours
                    assert {"time", "level", "service", "message"} <= entry.keys(), line
                    if entry.get("request_id") == request_id:
                        found.setdefault(spec.name, []).append(entry)
            return found

        deadline = time.monotonic() + 10
        while {"api_gateway", "user_service"} - (found := await lines_with_request_id()).keys():
            assert time.monotonic() < deadline, f"access lines missing: {found.keys()}"
            await asyncio.sleep(0.2)
        for service in ("api_gateway", "user_service"):
            access = [entry for entry in found[service] if entry.get("logger") == "access"]
            assert access, service
            entry = access[0]
            assert entry["service"] == service
            assert entry["route"] in ("/api/v1/users/{path}", "/v1/users/me")
            assert entry["status"] == 200
            assert re.fullmatch(r"[0-9a-f]{32}", str(entry["trace_id"]))
            assert re.fullmatch(r"[0-9a-f]{16}", str(entry["span_id"]))
        # One request, one trace: the gateway's trace id reached the user service.
        assert found["api_gateway"][0]["trace_id"] == found["user_service"][0]["trace_id"]

        everything = "".join(
            path.read_text() for spec in SERVICES if (path := stack.log_file(spec.name))
        )
        for secret in (password, tokens["access_token"], tokens["refresh_token"]):
            assert secret not in everything
