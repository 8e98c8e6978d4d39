"""The OTLP encoding of spans: the same request as OpenTelemetry's own encoder for spans of
every shape, and the exporter that sends it to a collector."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import httpx
import pytest
import requests
from opentelemetry.exporter.otlp.common.http import Compression
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as reference
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from service_testing import OtlpReceiver
from shared.otlp import LoopSpanProcessor, SpanExporter, encode_spans

REMOTE_PARENT = SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value"), ("other", "x")]),
)


def recorded(resource: Resource | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def assert_same_request(spans: Sequence[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == reference(spans)


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider, exporter = recorded()
    yield provider, exporter
    provider.shutdown()


class TestSameRequestAsOpenTelemetrysEncoder:
    def test_spans_of_every_kind_with_parents_local_and_remote(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        tracer_provider, exporter = provider
        tracer = tracer_provider.get_tracer("shared")
        remote = set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
        with tracer.start_as_current_span("GET /v1/products", context=remote, kind=SpanKind.SERVER):
            for kind in SpanKind:
                with tracer.start_as_current_span(f"child {kind.name}", kind=kind):
                    pass
        with tracer.start_as_current_span("a root, no parent"):
            pass
        assert_same_request(exporter.get_finished_spans())

    def test_attributes_of_every_type(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        tracer_provider, exporter = provider
        attributes = {
            "text": "café ☕",
            "empty text": "",
            "true": True,
            "false": False,
            "zero": 0,
            "int": 42,
            "negative": -7,
            "int64 max": 2**63 - 1,
            "int64 min": -(2**63),
            "double": 3.25,
            "negative double": -0.5,
            "texts": ["a", "b", ""],
            "ints": [1, -2, 3],
            "bools": [True, False],
            "doubles": [0.5, 1.5],
            "empty list": [],
            "": "an empty key",
        }
        with tracer_provider.get_tracer("shared").start_as_current_span("s", attributes=attributes):
            pass
        assert_same_request(exporter.get_finished_spans())

    def test_events_links_status_and_what_was_dropped(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        tracer_provider, exporter = provider
        tracer = tracer_provider.get_tracer("shared")
        link = Link(REMOTE_PARENT, {"link.kind": "follows", "n": 2})
        local = SpanContext(trace_id=5, span_id=6, is_remote=False)
        with tracer.start_as_current_span("failed", links=[link, Link(local)]) as span:
            span.add_event("retry", {"attempt": 2, "upstream": "inventory"})
            span.add_event("no attributes")
            span.record_exception(ValueError("out of stock"))
            span.set_status(Status(StatusCode.ERROR, "ValueError: out of stock"))
        with tracer.start_as_current_span("fine") as span:
            span.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span("crowded") as span:
            for index in range(200):  # past the SDK's limit of 128: some are dropped
                span.set_attribute(f"key {index}", index)
                span.add_event(f"event {index}")
        assert exporter.get_finished_spans()[-1].dropped_attributes > 0
        assert_same_request(exporter.get_finished_spans())

    def test_scopes_and_resources_are_grouped_as_the_reference_groups_them(self) -> None:
        first, first_spans = recorded(Resource.create({"service.name": "a"}, "https://s/1"))
        same, same_spans = recorded(Resource.create({"service.name": "a"}, "https://s/1"))
        other, other_spans = recorded(Resource.create({"service.name": "b", "replica": 3}))
        for index, tracer_provider in enumerate((first, other, same, first)):
            for name, version, schema in (("shared", None, None), ("db", "1.2", "https://s/2")):
                tracer = tracer_provider.get_tracer(name, version, schema)
                with tracer.start_as_current_span(f"span {index} {name}"):
                    pass
        spans = [
            *first_spans.get_finished_spans(),
            *other_spans.get_finished_spans(),
            *same_spans.get_finished_spans(),
        ]
        random.Random(7).shuffle(spans)
        assert_same_request(spans)
        assert len(ExportTraceServiceRequest.FromString(encode_spans(spans)).resource_spans) == 2

    def test_a_value_that_cannot_be_encoded_is_left_out_and_logged(
        self,
        provider: tuple[TracerProvider, InMemorySpanExporter],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        tracer_provider, exporter = provider
        with tracer_provider.get_tracer("shared").start_as_current_span(
            "s", attributes={"too big": 2**64, "kept": "yes"}
        ):
            pass
        with caplog.at_level(logging.ERROR, logger="shared.otlp"):
            assert_same_request(exporter.get_finished_spans())
        assert "too big" in caplog.text
        (span,) = (
            ExportTraceServiceRequest.FromString(encode_spans(exporter.get_finished_spans()))
            .resource_spans[0]
            .scope_spans[0]
            .spans
        )
        assert [attribute.key for attribute in span.attributes] == ["kept"]

    def test_repeated_attributes_are_encoded_the_same_each_time(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        # The encoder keeps what it encoded; 1, 1.0 and True are equal in Python yet
        # three different values, and so are 0.0 and -0.0.
        tracer_provider, exporter = provider
        tracer = tracer_provider.get_tracer("shared")
        for value in (1, 1.0, True, 1, "1", True, 1.0, 0.0, -0.0, 0.0):
            with tracer.start_as_current_span("s", attributes={"value": value}):
                pass
        spans = exporter.get_finished_spans()
        assert_same_request(spans)
        assert_same_request(spans)

    def test_no_spans_no_resource(self) -> None:
        assert encode_spans([]) == b""
        assert_same_request([])


class TestExporter:
    def test_the_collector_receives_what_the_spans_said(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        tracer_provider, exporter = provider
        tracer = tracer_provider.get_tracer("shared")
        with (
            tracer.start_as_current_span(
                "GET /v1/products/{id}", kind=SpanKind.SERVER, attributes={"http.route": "/x"}
            ),
            tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
        ):
            pass
        with OtlpReceiver() as collector:
            sender = SpanExporter(endpoint=f"{collector.endpoint}/v1/traces")
            assert sender.export(exporter.get_finished_spans()) is SpanExportResult.SUCCESS
            sender.shutdown()
        received = {span.name: span for span in collector.spans}
        assert set(received) == {"GET /v1/products/{id}", "SELECT"}
        server, statement = received["GET /v1/products/{id}"], received["SELECT"]
        assert statement.parent_span_id == server.span_id
        assert server.service == "test"
        assert server.attributes["http.route"] == "/x"

    def test_a_collector_that_refuses_is_a_failed_export(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        tracer_provider, exporter = provider
        with tracer_provider.get_tracer("shared").start_as_current_span("s"):
            pass
        with OtlpReceiver() as collector:
            endpoint = collector.endpoint
        # Nothing listens there any more.
        sender = SpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=0.5)
        assert sender.export(exporter.get_finished_spans()) is SpanExportResult.FAILURE
        sender.shutdown()
        assert sender.export(exporter.get_finished_spans()) is SpanExportResult.FAILURE

    def test_a_batch_over_the_size_limit_is_dropped(
        self, provider: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        tracer_provider, exporter = provider
        with tracer_provider.get_tracer("shared").start_as_current_span(
            "s", attributes={"a": "x" * 500}
        ):
            pass
        with OtlpReceiver() as collector:
            sender = SpanExporter(endpoint=f"{collector.endpoint}/v1/traces", max_request_size=100)
            assert sender.export(exporter.get_finished_spans()) is SpanExportResult.FAILURE
        assert collector.received == 0


def ended_spans(count: int, *, sampled: bool = True) -> list[ReadableSpan]:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return [
        ReadableSpan(
            f"span {n}",
            SpanContext(random.getrandbits(128) | 1, random.getrandbits(64) | 1, False, flags),
            resource=Resource.create({"service.name": "test"}),
            start_time=1,
            end_time=2,
        )
        for n in range(count)
    ]


async def received(collector: OtlpReceiver, count: int) -> set[str]:
    """The names of what the collector has received, once it has `count` spans."""
    for _ in range(200):
        if collector.received >= count:
            break
        await asyncio.sleep(0.01)
    return {span.name for span in collector.spans}


@contextmanager
def exporting_to_a_collector(
    max_queue: int | None = None, max_batch: int | None = None, schedule_delay: float | None = None
) -> Iterator[tuple[OtlpReceiver, LoopSpanProcessor]]:
    """A collector, and a processor that exports to it (shut down on the way out)."""
    with OtlpReceiver() as collector:
        processor = LoopSpanProcessor(
            SpanExporter(endpoint=f"{collector.endpoint}/v1/traces"),
            max_queue=max_queue,
            max_batch=max_batch,
            schedule_delay=schedule_delay,
        )
        try:
            yield collector, processor
        finally:
            processor.shutdown()


class TestLoopSpanProcessor:
    async def test_a_full_batch_leaves_at_once_the_rest_on_the_way_out(self) -> None:
        with exporting_to_a_collector(max_batch=4, schedule_delay=60) as (collector, processor):
            async with processor.exporting():
                for span in ended_spans(6):
                    processor.on_end(span)
                assert await received(collector, 4) == {f"span {n}" for n in range(4)}
                await asyncio.sleep(0.05)
                assert collector.received == 4  # the last two wait for a batch or the delay
        assert collector.batches == 2
        assert {span.name for span in collector.spans} == {f"span {n}" for n in range(6)}

    async def test_a_partial_batch_leaves_after_the_delay(self) -> None:
        with exporting_to_a_collector(schedule_delay=0.05) as (collector, processor):
            async with processor.exporting():
                for span in ended_spans(2):
                    processor.on_end(span)
                assert await received(collector, 2) == {"span 0", "span 1"}

    async def test_spans_that_end_while_a_due_batch_is_posted_wait_for_the_next(
        self,
    ) -> None:
        class Busy(SpanExporter):
            """A server under load: another span ends while each batch is posted."""

            processor: LoopSpanProcessor
            busy = True
            posts = 0

            async def post(self, client: httpx.AsyncClient, body: bytes, count: int) -> bool:
                self.posts += 1
                if self.busy:
                    self.processor.on_end(ended_spans(1)[0])
                return await super().post(client, body, count)

        delay = 0.05
        with OtlpReceiver() as collector:
            exporter = Busy(endpoint=f"{collector.endpoint}/v1/traces")
            processor = exporter.processor = LoopSpanProcessor(
                exporter, max_batch=100, schedule_delay=delay
            )
            loop = asyncio.get_running_loop()
            async with processor.exporting():
                started = loop.time()
                processor.on_end(ended_spans(1)[0])
                await asyncio.sleep(6 * delay)
                delays = (loop.time() - started) / delay
                posts = exporter.posts
                exporter.busy = False
            processor.shutdown()
        # One post when each delay is up, not one for every span that ended meanwhile.
        assert 1 <= posts <= delays + 1

    async def test_spans_ended_on_other_threads_wake_the_loop(self) -> None:
        with exporting_to_a_collector(max_batch=3, schedule_delay=60) as (collector, processor):
            async with processor.exporting():
                spans = ended_spans(3)
                await asyncio.to_thread(lambda: [processor.on_end(span) for span in spans])
                assert len(await received(collector, 3)) == 3

    def test_without_a_loop_spans_wait_for_a_flush_and_a_full_queue_drops(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with exporting_to_a_collector(max_queue=3, max_batch=2) as (collector, processor):
            for span in [*ended_spans(2, sampled=False), *ended_spans(5)]:
                processor.on_end(span)
            assert collector.received == 0
            assert processor.force_flush()
        assert {span.name for span in collector.spans} == {"span 0", "span 1", "span 2"}
        assert collector.batches == 2
        assert processor.dropped == 2
        assert "span queue full" in caplog.text

    async def test_a_batch_that_fails_does_not_end_the_export(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Failing(SpanExporter):
            failures = 1

            async def post(self, client: httpx.AsyncClient, body: bytes, count: int) -> bool:
                return False if self.failures else await super().post(client, body, count)

            def send(self, body: bytes, count: int) -> SpanExportResult:
                if self.failures:
                    self.failures -= 1
                    raise ConnectionError("refused")
                return super().send(body, count)

        with OtlpReceiver() as collector:
            processor = LoopSpanProcessor(
                Failing(endpoint=f"{collector.endpoint}/v1/traces"), max_batch=2, schedule_delay=60
            )
            async with processor.exporting():
                for span in ended_spans(4):
                    processor.on_end(span)
                    await asyncio.sleep(0.02)
                assert await received(collector, 2) == {"span 2", "span 3"}
            processor.shutdown()
        assert "exporting 2 spans failed" in caplog.text

    async def test_a_batch_being_posted_when_the_export_stops_still_arrives(self) -> None:
        with exporting_to_a_collector(max_batch=2, schedule_delay=60) as (collector, processor):
            async with processor.exporting():
                for span in ended_spans(2):
                    processor.on_end(span)
                for _ in range(100):  # until it is taken from the queue: on its way
                    if not processor._queue:
                        break
                    await asyncio.sleep(0)
                assert not processor._queue
                assert collector.received == 0
            assert collector.received == 2

    async def test_the_loop_posts_and_a_post_that_fails_goes_to_the_exporters_thread(
        self,
    ) -> None:
        def overloaded(request: httpx.Request) -> httpx.Response:
            return httpx.Response(503)

        class Counting(SpanExporter):
            posts: ClassVar[list[bool]] = []
            sent: ClassVar[list[int]] = []

            async def post(self, client: httpx.AsyncClient, body: bytes, count: int) -> bool:
                if not self.posts:  # the first post meets a collector that is overloaded
                    async with httpx.AsyncClient(
                        transport=httpx.MockTransport(overloaded)
                    ) as overloaded_collector:
                        posted = await super().post(overloaded_collector, body, count)
                else:
                    posted = await super().post(client, body, count)
                self.posts.append(posted)
                return posted

            def send(self, body: bytes, count: int) -> SpanExportResult:
                self.sent.append(count)
                return super().send(body, count)

        with OtlpReceiver() as collector:
            exporter = Counting(endpoint=f"{collector.endpoint}/v1/traces")
            assert exporter.posts_from_loop
            processor = LoopSpanProcessor(exporter, max_batch=2, schedule_delay=60)
            async with processor.exporting():
                for span in ended_spans(6):
                    processor.on_end(span)
                    await asyncio.sleep(0.02)
                assert len(await received(collector, 6)) == 6
            processor.shutdown()
        assert Counting.posts == [False, True, True]
        assert Counting.sent == [2]  # only the batch the loop could not post
        assert collector.batches == 3

    def test_a_batch_to_an_endpoint_that_needs_the_exporters_session_is_not_posted_by_the_loop(
        self,
    ) -> None:
        assert SpanExporter(endpoint="http://collector:4318/v1/traces").posts_from_loop
        assert not SpanExporter(endpoint="https://collector:4318/v1/traces").posts_from_loop
        assert not SpanExporter(
            endpoint="http://collector:4318/v1/traces", compression=Compression.GZIP
        ).posts_from_loop
        session = requests.Session()
        session.auth = ("user", "secret")
        assert not SpanExporter(
            endpoint="http://collector:4318/v1/traces", session=session
        ).posts_from_loop

    async def test_a_batch_is_encoded_in_slices_with_the_loop_free_between_them(
        self,
    ) -> None:
        processor = LoopSpanProcessor(SpanExporter(endpoint="http://127.0.0.1:9/v1/traces"))
        spans = ended_spans(150)
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_turns())
        await asyncio.sleep(0)
        before = turns
        body, count = await processor._encoded_in_slices(spans)
        counter.cancel()
        processor.shutdown()

        assert turns - before >= 2  # the loop turned between the slices (64 + 64 + 22)
        request = ExportTraceServiceRequest.FromString(body)
        assert len(request.resource_spans) == 3
        names = [span.name for each in request.resource_spans for span in each.scope_spans[0].spans]
        assert names == [span.name for span in spans]
        assert count == 150
