"""Spans to OTLP/HTTP, encoded straight to protobuf's wire format.

OpenTelemetry's exporter builds a protobuf object for every span, attribute and value and
then serialises them: 45 us of CPU per span here, as much as making the span, spent in
the process whose requests are traced (under the product read with 10% of traces kept,
the exporter's thread took 6% of the service's CPU). `encode_spans` writes the same
`ExportTraceServiceRequest` bytes directly (same fields, same grouping by resource and
instrumentation scope, same values skipped) at a third of that; `SpanExporter` is
OpenTelemetry's OTLP/HTTP exporter (endpoint, headers, compression, retries, its own
metrics) with only the encoding swapped, and `send` to post bytes already encoded;
`LoopSpanProcessor` batches a process's ended spans, encodes them on its event loop and
posts them from there too (`SpanExporter.post`), or has a thread of its own post them
with the exporter's retries when that fails or the endpoint needs what only the
exporter's session does (TLS, compression, credentials). The tests compare both encoders
on spans of every shape.

Wire format: https://protobuf.dev/programming-guides/encoding/, messages from
opentelemetry/proto/collector/trace/v1/trace_service.proto.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from opentelemetry.exporter.otlp.common._exporter_metrics import ExportResult
from opentelemetry.exporter.otlp.common.http import Compression
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode

logger = logging.getLogger(__name__)

_INT64 = range(-(2**63), 2**63)
_UINT64_MASK = 2**64 - 1
#: SpanFlags: the parent's remoteness is known, and whether it is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
#: Span.SpanKind (0 is UNSPECIFIED).
_KINDS = {
    SpanKind.INTERNAL: b"\x01",
    SpanKind.SERVER: b"\x02",
    SpanKind.CLIENT: b"\x03",
    SpanKind.PRODUCER: b"\x04",
    SpanKind.CONSUMER: b"\x05",
}
_SMALL = [bytes((n,)) for n in range(0x80)]
#: The spans of one resource, encoded, by instrumentation scope.
_Scopes = dict[InstrumentationScope | None, list[bytes]]
_fixed32 = struct.Struct("<I").pack
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
#: A span's start and end fields.
_times = struct.Struct("<cQcQ").pack


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes, or an embedded message."""
    return tag + _varint(len(payload)) + payload


# --- common.proto: AnyValue, KeyValue, InstrumentationScope -----------------------------


def _any_value(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"{value} does not fit an int64")
        return b"\x18" + _varint(value & _UINT64_MASK)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        pairs = (_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", b"".join(pairs))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    encoded_key = _field(b"\x0a", key.encode()) if key else b""
    return encoded_key + _field(b"\x12", _any_value(value))


#: Encoded attributes by (field tag, key, value type, value): most repeat from span to
#: span (a method, a route, a status, a peer), and a lookup is a tenth of encoding one.
#: Not floats: 0.0 and -0.0 are equal keys yet encode differently. Nor long values (a
#: path is the client's to choose): at most `_ENCODED_LIMIT` fields of at most
#: `MEMO_MAX_BYTES` each are kept.
_encoded: dict[tuple[bytes, str, type, Any], bytes] = {}
_ENCODED_LIMIT = 4096
MEMO_MAX_BYTES = 512
_REPEATABLE = (str, bool, int)


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a KeyValue field `tag`; one that cannot be encoded is left out
    (and logged), as OpenTelemetry's encoder does."""
    if not attributes:
        return b""
    fields = []
    for key, value in attributes.items():
        memo = (tag, key, value.__class__, value) if value.__class__ in _REPEATABLE else None
        field = _encoded.get(memo) if memo is not None else None
        if field is None:
            try:
                field = _field(tag, _key_value(key, value))
            except (TypeError, ValueError) as error:
                logger.exception("Failed to encode key %s: %s", key, error)
                continue
            if memo is not None and len(field) <= MEMO_MAX_BYTES:
                if len(_encoded) >= _ENCODED_LIMIT:
                    _encoded.clear()
                _encoded[memo] = field
        fields.append(field)
    return b"".join(fields)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    return (
        (_field(b"\x0a", scope.name.encode()) if scope.name else b"")
        + (_field(b"\x12", scope.version.encode()) if scope.version else b"")
        + _attributes(b"\x1a", scope.attributes)
    )


# --- trace.proto: Span, Span.Event, Span.Link, Status -----------------------------------


def _flags(parent: SpanContext | None) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _fixed32(flags)


def _event(event: Event) -> bytes:
    return (
        (b"\x09" + _fixed64(event.timestamp) if event.timestamp else b"")
        + (_field(b"\x12", event.name.encode()) if event.name else b"")
        + _attributes(b"\x1a", event.attributes)
        + (b"\x20" + _varint(event.dropped_attributes) if event.dropped_attributes else b"")
    )


def _link(link: Link) -> bytes:
    return (
        b"\x0a\x10"
        + link.context.trace_id.to_bytes(16, "big")
        + b"\x12\x08"
        + link.context.span_id.to_bytes(8, "big")
        + _attributes(b"\x22", link.attributes)
        + (b"\x28" + _varint(link.dropped_attributes) if link.dropped_attributes else b"")
        + b"\x35"
        + _flags(link.context)
    )


#: Span.kind fields by the kind's value (a lookup by the enum member itself hashes it by
#: a Python call).
_KIND_FIELDS = {kind._value_: b"\x30" + code for kind, code in _KINDS.items()}
#: Span.flags fields, by whether the parent is remote.
_LOCAL_FLAGS = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
#: Status fields without a description, by the code's value.
_STATUS_FIELDS = {0: b"\x7a\x00", 1: b"\x7a\x02\x18\x01", 2: b"\x7a\x02\x18\x02"}


def encode_span(span: ReadableSpan) -> bytes:
    """The Span message of `span`, read through `ReadableSpan`'s properties."""
    context = span.context
    assert context is not None  # an SDK span always has one
    parent = span.parent
    parts = [
        b"\x0a\x10"
        + context.trace_id.to_bytes(16, "big")
        + b"\x12\x08"
        + context.span_id.to_bytes(8, "big")
    ]
    if context.trace_state:
        state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
        parts.append(_field(b"\x1a", state.encode()))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if name := span.name:
        parts.append(_field(b"\x2a", name.encode()))
    parts.append(_KIND_FIELDS[span.kind._value_])
    if start := span.start_time:
        parts.append(b"\x39" + _fixed64(start))
    if end := span.end_time:
        parts.append(b"\x41" + _fixed64(end))
    parts.append(_attributes(b"\x4a", span.attributes))
    if dropped := span.dropped_attributes:
        parts.append(b"\x50" + _varint(dropped))
    if events := span.events:
        parts.extend(_field(b"\x5a", _event(event)) for event in events)
    if dropped := span.dropped_events:
        parts.append(b"\x60" + _varint(dropped))
    if links := span.links:
        parts.extend(_field(b"\x6a", _link(link)) for link in links)
    if dropped := span.dropped_links:
        parts.append(b"\x70" + _varint(dropped))
    status = span.status
    code = status.status_code._value_
    if status.description:
        parts.append(
            _field(
                b"\x7a",
                _field(b"\x12", status.description.encode())
                + (b"\x18" + _varint(code) if code else b""),
            )
        )
    else:
        parts.append(_STATUS_FIELDS[code])
    parts.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
    return b"".join(parts)


def span_name_and_kind(name: str, kind: SpanKind) -> bytes:
    """The name and kind fields of a Span message, as `encode_span` writes them (for
    `span_message`)."""
    return (_field(b"\x2a", name.encode()) if name else b"") + _KIND_FIELDS[kind._value_]


def span_attribute(key: str, value: str) -> bytes:
    """One string attribute's field of a Span message, as `encode_span` writes it."""
    return _field(b"\x4a", _key_value(key, value))


def span_attributes(attributes: Mapping[str, Any]) -> bytes:
    """The attributes fields of a Span message, as `encode_span` writes them (for
    `span_message`); a message may carry several runs of them, kept in order."""
    return _attributes(b"\x4a", attributes)


def span_message(
    trace_id: int,
    span_id: int,
    remote_parent_id: int | None,
    description: bytes,
    start_time: int,
    end_time: int,
    status_code: StatusCode,
) -> bytes:
    """The Span message `encode_span` writes for a span without trace state, events,
    links or status description, whose parent (if any) is remote, made from its parts
    (`description` is its `span_name_and_kind` and `span_attributes`; both times are
    set). The times follow the attributes here rather than precede them: a message's
    fields may come in any order."""
    return b"".join(
        (
            b"\x0a\x10",
            trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            span_id.to_bytes(8, "big"),
            b"" if remote_parent_id is None else b"\x22\x08" + remote_parent_id.to_bytes(8, "big"),
            description,
            _times(b"\x39", start_time, b"\x41", end_time),
            _STATUS_FIELDS[status_code._value_],
            _LOCAL_FLAGS if remote_parent_id is None else _REMOTE_FLAGS,
        )
    )


#: Span classes that write their own Span message (`shared.spans.RequestSpan`, with
#: `span_message`): `encode_span` reads a dozen properties of a span, and a request span
#: cost 3.6 us of batch work that way against 2.1 written from its fields (ids included).
SPAN_ENCODERS: dict[type[ReadableSpan], Callable[[Any], bytes]] = {}


# --- trace_service.proto: ExportTraceServiceRequest -------------------------------------


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The ExportTraceServiceRequest of `spans`: one ResourceSpans per resource, one
    ScopeSpans per instrumentation scope within it, in the order they first appear."""
    # Grouped by the resource object first: a process has one, and hashing a Resource
    # serialises its attributes to JSON each time.
    by_resource: dict[int, tuple[Resource, _Scopes]] = {}
    for span in spans:
        resource = span.resource
        entry = by_resource.get(id(resource))
        if entry is None:
            entry = by_resource[id(resource)] = (resource, {})
        encode = SPAN_ENCODERS.get(span.__class__, encode_span)
        entry[1].setdefault(span.instrumentation_scope or None, []).append(encode(span))
    merged: list[tuple[Resource, _Scopes]] = []
    for resource, scopes in by_resource.values():
        same = next((entry for entry in merged if entry[0] == resource), None)
        if same is None:
            merged.append((resource, scopes))
            continue
        for scope, encoded in scopes.items():
            same[1].setdefault(scope, []).extend(encoded)
    return b"".join(_field(b"\x0a", _resource_spans(*entry)) for entry in merged)


def _resource_spans(resource: Resource, scopes: _Scopes) -> bytes:
    return (
        _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        + b"".join(_field(b"\x12", _scope_spans(scope, spans)) for scope, spans in scopes.items())
        + (_field(b"\x1a", resource.schema_url.encode()) if resource.schema_url else b"")
    )


def _scope_spans(scope: InstrumentationScope | None, spans: list[bytes]) -> bytes:
    schema_url = scope.schema_url if scope is not None else ""
    return (
        _field(b"\x0a", _scope(scope))
        + b"".join(_field(b"\x12", span) for span in spans)
        + (_field(b"\x1a", schema_url.encode()) if schema_url else b"")
    )


class SpanExporter(OTLPSpanExporter):
    """OpenTelemetry's OTLP/HTTP span exporter, encoding with `encode_spans`.

    `export` is the exporter's own with the encoding swapped; it uses the exporter's
    client, size limit and metrics, which are internal to the version the lock file pins
    (a test exports through it to a collector)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        session = getattr(self._client._transport, "_session", None)
        #: Whether the event loop may post this exporter's batches (`post`): to a plain
        #: HTTP endpoint, uncompressed, through a session with nothing of its own (a
        #: credential provider's, a certificate), so that a post is the bytes, the
        #: endpoint and the exporter's headers, as the exporter's own would be.
        self.posts_from_loop = (
            urlsplit(self._endpoint).scheme == "http"
            and self._compression is Compression.NONE
            and type(session) is requests.Session
            and session.auth is None
            and session.cert is None
            and session.headers == requests.utils.default_headers()
        )

    def loop_client(self) -> httpx.AsyncClient:
        """A client for `post`, with the exporter's headers and timeout."""
        return httpx.AsyncClient(headers=self._client._headers, timeout=self._client._timeout)

    async def post(self, client: httpx.AsyncClient, body: bytes, count: int) -> bool:
        """Post the `count` spans encoded in `body` from the event loop, with a client from
        `loop_client` (only where `posts_from_loop`); False when that failed, and `send`
        then posts them with the exporter's retries. A batch over the size limit is left
        to `send` too, which drops and counts it."""
        if self._shutdown or self._too_large(body):
            return False
        with self._metrics.export_operation(count) as result:
            try:
                response = await client.post(self._endpoint, content=body)
            except httpx.HTTPError as error:
                return _failed(result, error)
            if not 200 <= response.status_code < 400:
                refused = httpx.HTTPStatusError(
                    f"{response.status_code} {response.reason_phrase}",
                    request=response.request,
                    response=response,
                )
                return _failed(result, refused, response.status_code)
        return True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.send(encode_spans(spans), len(spans))

    def send(self, body: bytes, count: int) -> SpanExportResult:
        """Post `count` spans already encoded (`encode_spans`); blocks while it retries."""
        if self._shutdown:
            logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(count) as result:
            if self._too_large(body):
                logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(body),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            if not sent.success:
                _failed(result, sent.error, sent.status_code)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _too_large(self, body: bytes) -> bool:
        return 0 < self._max_request_size < len(body)


def _failed(result: ExportResult, error: Exception | None, status_code: int | None = None) -> bool:
    """Record a failed export on the exporter's metrics: its error and the response's status."""
    result.error = error
    if status_code is not None:
        result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: status_code}
    return False


class LoopSpanProcessor(SpanProcessor):
    """Ended spans exported in batches from the event loop: encoded and posted there
    (`SpanExporter.post`); a batch the loop could not post, or cannot (TLS, compression,
    a credential provider's session), is posted by a thread of the processor's own with
    the exporter's retries (`SpanExporter.send`).

    OpenTelemetry's `BatchSpanProcessor` encodes and posts from its thread, which then
    competes with the event loop for the interpreter: measured in-process on the cached
    product read (bench/kept_trace.py, every trace kept), a request's span cost the read
    36 us of CPU exported that way and 15 us encoded on the loop. Posted by a thread, a
    batch of 2,048 spans then cost the read 2.5-3.5 us a span more than encoded and not
    posted (0.3 us for the same post in a loop of posts, with no event loop to contend
    with). Posted by the loop: 11.2 -> 9.0 us of CPU a kept trace (every trace kept, four
    rounds alternated with the thread's posts).

    A batch leaves when `max_batch` spans wait (a post costs 0.5 ms of CPU however few
    spans it carries), or what waits once `schedule_delay` seconds pass; at most
    `max_queue` wait (more are dropped and counted); unless given, these are read from
    `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) and
    `OTEL_BSP_MAX_QUEUE_SIZE`, by default 2048 spans, 5 s and 8192 spans: batches four
    times the SDK's, as posts cost the same whatever they carry (at one trace in ten,
    24.4 / 22.4 -> 20.3 / 18.5 us of CPU a kept trace in-process, bench/kept_trace.py).
    `exporting` runs it within the app's life; without it (no loop), spans wait for
    `force_flush` or `shutdown`, which export from the calling thread.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue: int | None = None,
        max_batch: int | None = None,
        schedule_delay: float | None = None,
    ) -> None:
        self._exporter = exporter
        # Unless given, read as the SDK's batch processor reads them.
        self._max_queue = max_queue or _environment(OTEL_BSP_MAX_QUEUE_SIZE, 8192)
        self._max_batch = max_batch or _environment(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 2048)
        self._schedule_delay = (
            schedule_delay
            if schedule_delay is not None
            else _environment(OTEL_BSP_SCHEDULE_DELAY, 5000) / 1000
        )
        # Spans end on the event loop's thread and on others (the outbox relay's): a
        # deque's append and popleft are atomic.
        self._queue: deque[ReadableSpan] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full = asyncio.Event()
        self._woken = False
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="span-export")
        self._client: httpx.AsyncClient | None = None
        self._exported: asyncio.Future[None] | None = None
        self.dropped = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.queue(span)

    def queue(self, span: ReadableSpan) -> None:
        """Queue `span`, sampled, for export (or drop it when the queue is full)."""
        if len(self._queue) >= self._max_queue:
            if not self.dropped:
                logger.warning("span queue full (%d): dropping spans", self._max_queue)
            self.dropped += 1
            return
        self._queue.append(span)
        loop = self._loop
        if loop is not None and not self._woken and len(self._queue) >= self._max_batch:
            self._woken = True
            loop.call_soon_threadsafe(self._full.set)

    @asynccontextmanager
    async def exporting(self) -> AsyncIterator[None]:
        """Export from the running loop while open; what waits is exported on the way out."""
        if self._loop is not None:  # another app of the process already exports
            yield
            return
        self._loop = asyncio.get_running_loop()
        self._full = asyncio.Event()
        if self._exporter.posts_from_loop:
            self._client = self._exporter.loop_client()
        task = asyncio.create_task(self._export_batches(), name="span-export")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            if self._exported is not None:
                await self._exported
                self._exported = None
            self._loop = None
            while self._queue:
                await self._post(self._encoded_batch())
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    async def _export_batches(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._full.wait(), self._schedule_delay)
                least = self._max_batch  # full batches only: a post costs 0.5 ms
            except TimeoutError:
                least = 1
            self._full.clear()
            self._woken = False
            while len(self._queue) >= least:
                # A batch taken from the queue is exported even if the export stops
                # meanwhile: `exporting` waits for it.
                self._exported = asyncio.ensure_future(self._export(self._batch()))
                await asyncio.shield(self._exported)
                # What ended while it was posted waits for a full batch or the next delay:
                # under load spans keep ending, and going on while any waits posted a few
                # at a time, back to back (0.5 ms of CPU a post).
                least = self._max_batch

    async def _export(self, batch: list[ReadableSpan]) -> None:
        await self._post(await self._encoded_in_slices(batch))

    async def _post(self, encoded: tuple[bytes, int]) -> None:
        """Post a batch from the loop, else (or should that fail) from the thread."""
        body, count = encoded
        if not count:
            return
        if self._client is not None:
            try:
                if await self._exporter.post(self._client, body, count):
                    return
            except Exception:  # posted again below, by the exporter's own means
                logger.exception("posting %d spans from the event loop failed", count)
        await asyncio.get_running_loop().run_in_executor(self._sender, self._send, encoded)

    def _batch(self) -> list[ReadableSpan]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(len(queue), self._max_batch))]

    async def _encoded_in_slices(self, batch: list[ReadableSpan]) -> tuple[bytes, int]:
        """`batch` encoded `_SLICE` spans at a time, the loop free to serve in between
        (a batch of 512 encoded at once held it 1.5 to 3 ms). One request after another
        is one request: protobuf appends a repeated field's values (a ResourceSpans per
        slice here)."""
        slices = []
        for start in range(0, len(batch), _SLICE):
            if start:
                await asyncio.sleep(0)
            slices.append(self._encoded(batch[start : start + _SLICE]))
        return b"".join(body for body, _ in slices), sum(count for _, count in slices)

    def _encoded_batch(self) -> tuple[bytes, int]:
        return self._encoded(self._batch())

    def _encoded(self, spans: list[ReadableSpan]) -> tuple[bytes, int]:
        try:
            return encode_spans(spans), len(spans)
        except Exception:  # a value the encoder cannot write is left out, not raised
            logger.exception("encoding %d spans failed", len(spans))
            return b"", 0

    def _send(self, encoded: tuple[bytes, int]) -> None:
        # The exporter retries and reports a failed post itself; anything else must not
        # end the export for the rest of the process's life.
        if not encoded[1]:
            return
        try:
            self._exporter.send(*encoded)
        except Exception:
            logger.exception("exporting %d spans failed", encoded[1])

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what waits, from the calling thread."""
        while self._queue:
            self._send(self._encoded_batch())
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self._sender.shutdown()
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


#: Spans `LoopSpanProcessor` encodes between two turns of the event loop.
_SLICE = 64


def _environment(name: str, default: int) -> int:
    """A positive whole number from the environment variable `name`, else `default`."""
    value = os.environ.get(name, "").strip()
    try:
        number = int(value) if value else default
    except ValueError:
        logger.warning("%s is not a whole number: %r; using %d", name, value, default)
        return default
    return number if number > 0 else default
