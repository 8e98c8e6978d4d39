"""Tracing inside one process: the spans and the `traceparent` that calls to other
services and events carry, on and off (the end-to-end suite follows one trace across the
real processes)."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar, copy_context
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as reference
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared import otlp
from shared import spans as request_spans
from shared.config import ServiceSettings
from shared.http import ServiceClient
from shared.logging import JsonFormatter
from shared.otlp import encode_spans
from shared.service import ServiceBuilder
from shared.tracing import (
    KEPT,
    NewUnkeptTrace,
    client_span,
    consume_span,
    current_span_id,
    current_trace_id,
    disable_tracing,
    enable_tracing,
    message_traceparent,
    outgoing_traceparent,
    publish_span,
    request_trace,
    server_span,
    trace_engine,
    traceparent_var,
    untraced,
)

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_exporter = InMemorySpanExporter()
_processor = SimpleSpanProcessor(_exporter)
_provider = TracerProvider()
_provider.add_span_processor(_processor)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, for one test, into memory."""
    enable_tracing(_provider, _processor)
    _exporter.clear()
    try:
        yield _exporter
    finally:
        disable_tracing()


def client_answering(status: int, seen: list[httpx.Request]) -> ServiceClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={})

    return ServiceClient(
        {"product": "http://product.test"},
        retries=0,
        custom_transport=httpx.MockTransport(answer),
    )


def parent_of(traceparent: str) -> tuple[str, str]:
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


class EndedSpans(SpanProcessor):
    """Keeps the spans that end, as they are (asking nothing of them)."""

    def __init__(self, ended: list[ReadableSpan]) -> None:
        self.ended = ended

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class TestCallsToOtherServices:
    async def test_a_call_is_a_client_span_whose_context_travels_in_traceparent(
        self, spans: InMemorySpanExporter
    ) -> None:
        seen: list[httpx.Request] = []
        client = client_answering(503, seen)
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("request") as outer:
            response = await client.request("product", "GET", "/v1/products/1")
        await client.aclose()

        assert response.status_code == 503
        (call,) = [span for span in spans.get_finished_spans() if span.kind is SpanKind.CLIENT]
        assert call.parent is not None
        assert call.parent.span_id == outer.get_span_context().span_id
        assert call.attributes is not None
        assert call.attributes["peer.service"] == "product"
        assert call.attributes["http.response.status_code"] == 503
        assert call.status.status_code is StatusCode.ERROR
        trace_id, span_id = parent_of(seen[0].headers["traceparent"])
        assert int(trace_id, 16) == call.context.trace_id
        assert int(span_id, 16) == call.context.span_id

    async def test_the_caller_traceparent_is_replaced_not_forwarded(
        self, spans: InMemorySpanExporter
    ) -> None:
        seen: list[httpx.Request] = []
        client = client_answering(200, seen)
        request = client.http.build_request(
            "GET", client.url("product", "/x"), headers={"traceparent": INCOMING}
        )
        response = await client.send("product", request)
        await response.aclose()
        await client.aclose()

        (call,) = spans.get_finished_spans()
        assert seen[0].headers["traceparent"] != INCOMING
        assert int(parent_of(seen[0].headers["traceparent"])[1], 16) == call.context.span_id

    async def test_untraced_work_makes_no_spans(self, spans: InMemorySpanExporter) -> None:
        seen: list[httpx.Request] = []
        client = client_answering(200, seen)
        with untraced():
            await client.request("product", "GET", "/x")
            with server_span("GET", "/y", None) as span:
                assert span is None
        await client.aclose()

        assert spans.get_finished_spans() == ()

    async def test_off_the_incoming_traceparent_goes_on_as_it_is(self) -> None:
        seen: list[httpx.Request] = []
        client = client_answering(200, seen)
        token = traceparent_var.set(INCOMING)
        try:
            await client.request("product", "GET", "/x")
        finally:
            traceparent_var.reset(token)
        await client.aclose()

        assert seen[0].headers["traceparent"] == INCOMING

    def test_a_call_that_fails_records_its_error_on_its_span(
        self, spans: InMemorySpanExporter
    ) -> None:
        url = httpx.URL("http://product.test/v1/products/1")
        current: list[trace.Span] = []

        def call() -> None:
            with client_span("product", "GET", url, httpx.Headers()) as span:
                assert span is not None
                current.append(trace.get_current_span())
                raise httpx.ConnectError("refused")

        with pytest.raises(httpx.ConnectError):
            call()

        assert trace.get_current_span() is trace.INVALID_SPAN
        (failed,) = spans.get_finished_spans()
        # Current while the call was under way.
        assert current[0].get_span_context() == failed.context
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "ConnectError: refused"
        assert [event.name for event in failed.events] == ["exception"]


class TestStatements:
    async def test_a_sampled_trace_has_a_span_per_statement_and_none_for_the_checkout(
        self, spans: InMemorySpanExporter, tmp_path: Path
    ) -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'traced.db'}")
        trace_engine(engine)
        with _provider.get_tracer("test").start_as_current_span("request") as request:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        await engine.dispose()

        names = {span.name: span for span in spans.get_finished_spans()}
        assert "connect" not in names  # a checkout from the pool is no span of its own
        [statement] = [span for span in names.values() if span.kind == SpanKind.CLIENT]
        assert statement.parent is not None
        assert statement.parent.span_id == request.get_span_context().span_id

    async def test_statements_outside_a_sampled_trace_make_no_span(
        self, spans: InMemorySpanExporter, tmp_path: Path
    ) -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'untraced.db'}")
        trace_engine(engine)
        unsampled = NonRecordingSpan(
            SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True)
        )
        with trace.use_span(unsampled):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        async with engine.connect() as connection:  # no trace at all
            await connection.execute(text("SELECT 2"))
        await engine.dispose()

        assert spans.get_finished_spans() == ()


class TestEvents:
    def test_publish_and_consume_continue_the_trace_that_wrote_the_event(
        self, spans: InMemorySpanExporter
    ) -> None:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("checkout") as checkout:
            stored = outgoing_traceparent()  # what the outbox row keeps
        assert int(parent_of(stored)[1], 16) == checkout.get_span_context().span_id

        publish = publish_span("order.confirmed", "id-1", "ecommerce.events", stored)
        header = message_traceparent(publish, stored)
        assert publish is not None
        publish.end()
        assert header is not None
        with consume_span("order.confirmed", "id-1", "notification.events", header):
            inside = current_trace_id(), current_span_id()

        finished = {span.name: span for span in spans.get_finished_spans()}
        produced, consumed = (
            finished["publish order.confirmed"],
            finished["process order.confirmed"],
        )
        assert produced.kind is SpanKind.PRODUCER
        assert produced.parent is not None
        assert produced.parent.span_id == checkout.get_span_context().span_id
        assert consumed.kind is SpanKind.CONSUMER
        assert consumed.parent is not None
        assert consumed.parent.span_id == produced.context.span_id
        assert len({span.context.trace_id for span in finished.values()}) == 1
        assert inside == (f"{consumed.context.trace_id:032x}", f"{consumed.context.span_id:016x}")

    def test_off_a_message_keeps_the_stored_traceparent_and_the_handler_its_trace(self) -> None:
        assert publish_span("order.confirmed", "id-1", "ecommerce.events", INCOMING) is None
        assert message_traceparent(None, INCOMING) == INCOMING
        with consume_span("order.confirmed", "id-1", "notification.events", INCOMING):
            assert current_trace_id() == parent_of(INCOMING)[0]
            assert current_span_id() is None
            # What the handler writes to its outbox continues the same trace.
            assert parent_of(outgoing_traceparent())[0] == parent_of(INCOMING)[0]
        assert current_trace_id() is None

    def test_an_event_of_a_trace_not_kept_makes_no_span_and_stays_in_its_trace(
        self, spans: InMemorySpanExporter
    ) -> None:
        unkept = INCOMING[:-2] + "00"
        assert publish_span("order.confirmed", "id-1", "ecommerce.events", unkept) is None
        assert message_traceparent(None, unkept) == unkept
        with consume_span("order.confirmed", "id-1", "notification.events", unkept):
            assert current_trace_id() == parent_of(unkept)[0]
            assert current_span_id() is None
            # What the handler writes continues the trace, still not kept.
            written = outgoing_traceparent()
            assert parent_of(written)[0] == parent_of(unkept)[0]
            assert written.endswith("-00")
        assert spans.get_finished_spans() == ()

    def test_a_garbled_traceparent_starts_a_new_trace(self, spans: InMemorySpanExporter) -> None:
        with consume_span("order.confirmed", "id-1", "q", "00-not-a-trace-01"):
            pass

        (consumed,) = spans.get_finished_spans()
        assert consumed.parent is None


class TestLogLines:
    def test_a_line_written_inside_a_span_names_its_trace_and_span(
        self, spans: InMemorySpanExporter
    ) -> None:
        formatter = JsonFormatter("test_service")
        record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO"})
        with trace.get_tracer("test").start_as_current_span("work") as span:
            entry = json.loads(formatter.format(record))

        assert entry["trace_id"] == f"{span.get_span_context().trace_id:032x}"
        assert entry["span_id"] == f"{span.get_span_context().span_id:016x}"
        assert entry["service"] == "test_service"


def traced_app(seen: list[httpx.Request]) -> tuple[FastAPI, ServiceClient]:
    """An app whose one route calls another service and says which trace it was in and
    what an event it wrote would carry."""
    client = client_answering(200, seen)
    router = APIRouter()

    @router.get("/work")
    async def work() -> dict[str, str | None]:
        await client.request("product", "GET", "/x")
        return {"trace_id": current_trace_id(), "event_traceparent": outgoing_traceparent()}

    settings = ServiceSettings(_env_file=None, service_name="probe_service", environment="test")
    service = ServiceBuilder(settings, title="probe")
    service.add_routers(router)
    return service.build(), client


async def get_work(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as http:
        return await http.get("/work", headers=headers)


@pytest.fixture
def sampled_share() -> Iterator[Callable[[float], InMemorySpanExporter]]:
    """Tracing on, keeping the given share of the traces requests start."""

    def enable(share: float) -> InMemorySpanExporter:
        enable_tracing(_provider, _processor, sampled_share=share)
        _exporter.clear()
        return _exporter

    try:
        yield enable
    finally:
        disable_tracing()


class TestRequestSampling:
    def test_each_request_is_kept_or_served_under_a_traceparent(
        self, sampled_share: Callable[[float], InMemorySpanExporter]
    ) -> None:
        unsampled = INCOMING[:-2] + "00"
        # Off, a request is served under what came in, as it came.
        assert [request_trace(t) for t in (None, INCOMING, unsampled)] == [
            None,
            INCOMING,
            unsampled,
        ]
        sampled_share(0.0)
        new = request_trace(None)
        assert isinstance(new, NewUnkeptTrace)
        assert new.traceparent == new.traceparent  # made once, when first asked for
        assert new.traceparent.endswith("-00")
        assert request_trace(None) is not new
        assert request_trace(INCOMING) is KEPT  # the caller's decision either way
        assert request_trace(unsampled) == unsampled
        sampled_share(1.0)
        assert request_trace(None) is KEPT

    async def test_a_trace_not_kept_makes_no_span_yet_travels_on(
        self, sampled_share: Callable[[float], InMemorySpanExporter]
    ) -> None:
        spans = sampled_share(0.0)
        seen: list[httpx.Request] = []
        app, client = traced_app(seen)

        response = await get_work(app)
        await client.aclose()

        assert spans.get_finished_spans() == ()
        trace_id, _ = parent_of(seen[0].headers["traceparent"])
        assert seen[0].headers["traceparent"].endswith("-00")  # the callee keeps none either
        assert response.json()["trace_id"] == trace_id
        # An event written meanwhile continues the same trace, not kept by its consumers.
        event_traceparent = response.json()["event_traceparent"]
        assert parent_of(event_traceparent)[0] == trace_id
        assert event_traceparent.endswith("-00")

    async def test_the_callers_decision_is_kept_either_way(
        self, sampled_share: Callable[[float], InMemorySpanExporter]
    ) -> None:
        spans = sampled_share(0.0)
        unsampled = INCOMING[:-2] + "00"
        seen: list[httpx.Request] = []
        app, client = traced_app(seen)

        await get_work(app, {"traceparent": unsampled})
        assert spans.get_finished_spans() == ()
        await get_work(app, {"traceparent": INCOMING})
        await client.aclose()

        assert seen[0].headers["traceparent"] == unsampled
        server = next(span for span in spans.get_finished_spans() if span.kind is SpanKind.SERVER)
        assert server.parent is not None
        assert server.parent.span_id == int(parent_of(INCOMING)[1], 16)
        assert seen[1].headers["traceparent"].endswith("-01")

    async def test_a_kept_trace_starts_with_the_request(
        self, sampled_share: Callable[[float], InMemorySpanExporter]
    ) -> None:
        spans = sampled_share(1.0)
        seen: list[httpx.Request] = []
        app, client = traced_app(seen)

        response = await get_work(app)
        await client.aclose()

        kinds = {span.kind: span for span in spans.get_finished_spans()}
        server_context = kinds[SpanKind.SERVER].context
        event_traceparent = response.json()["event_traceparent"]
        assert event_traceparent[:-2] == (
            f"00-{server_context.trace_id:032x}-{server_context.span_id:016x}-"
        )
        assert int(event_traceparent[-2:], 16) & 0x01  # sampled
        assert kinds[SpanKind.SERVER].parent is None
        assert kinds[SpanKind.SERVER].name == "GET /work"
        assert kinds[SpanKind.CLIENT].parent is not None
        assert kinds[SpanKind.CLIENT].parent.span_id == kinds[SpanKind.SERVER].context.span_id


class TestRequestSpan:
    """The SERVER span `shared.spans` makes behaves as the SDK's span would."""

    def test_it_continues_the_callers_trace_or_starts_one(
        self, spans: InMemorySpanExporter
    ) -> None:
        with server_span("GET", "/x", INCOMING) as child, server_span("GET", "/y", None) as root:
            assert child is not None
            assert root is not None
        continued, new = spans.get_finished_spans()[::-1]

        assert continued.parent is not None
        assert continued.parent.is_remote
        assert (continued.parent.trace_id, continued.parent.span_id) == (
            int(parent_of(INCOMING)[0], 16),
            int(parent_of(INCOMING)[1], 16),
        )
        assert continued.context.trace_id == continued.parent.trace_id
        assert new.parent is None
        assert new.context.trace_id not in (0, continued.context.trace_id)
        assert new.context.trace_flags.sampled
        assert new.attributes == {"http.request.method": "GET", "url.path": "/y"}
        assert new.start_time is not None
        assert new.end_time is not None
        assert new.start_time <= new.end_time

    def test_its_ids_are_made_once_whenever_first_asked(self, spans: InMemorySpanExporter) -> None:
        with server_span("GET", "/x", None) as asked, server_span("GET", "/y", INCOMING):
            assert asked is not None
            during = asked.get_span_context()
            assert trace.get_current_span().get_span_context() != during  # the inner one's
        with server_span("GET", "/z", None) as child:
            assert child is not None
            child.set_attribute("shop.extra", 1)
            child.update_name("renamed")
        inner, outer, unasked = spans.get_finished_spans()

        assert outer.context == during
        assert inner.context.trace_id == int(parent_of(INCOMING)[0], 16)
        assert inner.context.span_id not in (0, during.span_id)
        assert unasked.context.is_valid
        assert unasked.context.trace_id not in (during.trace_id, inner.context.trace_id)
        assert unasked.name == "renamed"
        assert unasked.attributes == {
            "http.request.method": "GET",
            "url.path": "/z",
            "shop.extra": 1,
        }

    def test_its_ids_are_those_it_is_exported_with_when_asked_after(self) -> None:
        # Exported (`LoopSpanProcessor` writes it) before anything asked for its context.
        ended: list[ReadableSpan] = []
        made = request_spans.RequestSpans(EndedSpans(ended), _provider.resource)
        for traceparent in (None, INCOMING):
            span = made.start("GET", "/x", traceparent)
            assert span is not None
            with span:
                pass
        written = ExportTraceServiceRequest.FromString(encode_spans(ended))

        exported = written.resource_spans[0].scope_spans[0].spans
        assert [(s.trace_id, s.span_id) for s in exported] == [
            (span.context.trace_id.to_bytes(16, "big"), span.context.span_id.to_bytes(8, "big"))
            for span in ended
        ]
        assert exported[1].trace_id.hex() == parent_of(INCOMING)[0]

    def test_while_open_it_is_opentelemetrys_current_span(
        self, spans: InMemorySpanExporter
    ) -> None:
        # Set on OpenTelemetry's context variable itself: the pinned version has the
        # standard runtime context (else the span would go through its API).
        assert request_spans._CONTEXT is not None
        outside = trace.get_current_span()
        with server_span("GET", "/x", None) as span:
            assert trace.get_current_span() is span
        assert trace.get_current_span() is outside

    def test_ended_it_holds_nothing_of_the_request(self, spans: InMemorySpanExporter) -> None:
        class Marker:
            pass

        request_value: ContextVar[Marker] = ContextVar("request_value")

        def serve() -> None:
            request_value.set(Marker())
            with server_span("GET", "/x", None):
                pass

        request_context = copy_context()
        request_context.run(serve)
        marker = weakref.ref(request_context[request_value])
        del request_context

        assert len(spans.get_finished_spans()) == 1  # the span outlives the request
        assert marker() is None

    def test_it_writes_itself_as_json_as_the_sdks_span_does(
        self, spans: InMemorySpanExporter
    ) -> None:
        with server_span("GET", "/x/1", INCOMING) as span:
            assert span is not None
            span.served("/x/{id}", 503)
        [ended] = spans.get_finished_spans()

        written = json.loads(ended.to_json())

        assert written["name"] == "GET /x/{id}"
        assert written["kind"] == "SpanKind.SERVER"
        assert written["context"]["span_id"] == f"0x{ended.context.span_id:016x}"
        assert written["parent_id"] == f"0x{parent_of(INCOMING)[1]}"
        assert written["attributes"]["http.response.status_code"] == 503
        assert written["status"]["status_code"] == "ERROR"
        assert written["resource"]["attributes"] == dict(ended.resource.attributes)

    def test_an_escaping_exception_is_recorded_as_the_sdk_records_it(
        self, spans: InMemorySpanExporter
    ) -> None:
        error = KeyError("gone")
        with pytest.raises(KeyError), server_span("GET", "/x", None):
            raise error
        with _provider.get_tracer("reference").start_as_current_span("reference"):
            trace.get_current_span().record_exception(error)
            trace.get_current_span().set_status(StatusCode.ERROR, "KeyError: 'gone'")
        request, reference = spans.get_finished_spans()

        assert request.status.status_code is StatusCode.ERROR
        assert request.status.description == reference.status.description
        [event], [expected] = request.events, reference.events
        assert event.name == expected.name == "exception"
        recorded = dict(event.attributes or {})
        reference_attributes = dict(expected.attributes or {})
        # The same traceback, seen from where each was recorded.
        stacktrace = recorded.pop("exception.stacktrace")
        assert stacktrace.endswith("raise error\nKeyError: 'gone'\n")
        reference_attributes.pop("exception.stacktrace")
        assert recorded == reference_attributes

    def test_once_ended_it_changes_no_more_and_ends_once(self, spans: InMemorySpanExporter) -> None:
        with server_span("GET", "/x", None) as span:
            assert span is not None
            span.served("/x/{id}", 503)
            assert span.is_recording()
        span.update_name("renamed")
        span.set_attribute("late", 1)
        span.end()
        [ended] = spans.get_finished_spans()

        assert not span.is_recording()
        assert ended.name == "GET /x/{id}"
        assert ended.attributes is not None
        assert "late" not in ended.attributes
        assert ended.attributes["http.response.status_code"] == 503
        assert ended.status.status_code is StatusCode.ERROR

    def test_it_is_encoded_as_opentelemetrys_encoder_encodes_it(
        self, spans: InMemorySpanExporter
    ) -> None:
        # A request's span writes itself: requests of one method, route and status (what
        # they share then encoded once) on two paths, from a caller and as a root, a
        # server error, and spans of other shapes (renamed, an attribute of its own, an
        # exception).
        long_path = "/x/" + "a" * 1000
        for path, traceparent, status_code in (
            ("/x/1", INCOMING, 200),
            ("/x/1", None, 200),
            ("/x/2", None, 200),
            ("/x/2", None, 503),
            (long_path, None, 200),
        ):
            with server_span("GET", path, traceparent) as span:
                assert span is not None
                span.served("/x/{id}", status_code)
        with server_span("GET", "/z", None) as span:
            assert span is not None
            span.update_name("renamed")
            span.set_attributes({"shop.extra": 1, "shop.long": long_path})
            span.set_status(StatusCode.OK)
        with pytest.raises(ValueError, match="no"), server_span("POST", "/y", None):
            raise ValueError("no")
        finished = spans.get_finished_spans()

        ours = ExportTraceServiceRequest.FromString(encode_spans(finished))
        assert ours == reference(finished)
        # A long value (a path is the client's to choose) is written, not remembered.
        assert "/x/1" in request_spans._paths
        assert long_path not in request_spans._paths
        assert all(long_path not in memo for memo in otlp._encoded)

    def test_an_ok_status_is_final(self, spans: InMemorySpanExporter) -> None:
        with server_span("GET", "/x", None) as span:
            assert span is not None
            span.set_status(StatusCode.OK)
            span.set_status(StatusCode.ERROR, "too late")
        [ended] = spans.get_finished_spans()

        assert ended.status.status_code is StatusCode.OK
