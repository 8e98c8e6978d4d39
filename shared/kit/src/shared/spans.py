"""The parts of tracing that need OpenTelemetry's SDK, imported only by a process that
traces: the SERVER span of a request, made here rather than by the SDK's tracer.

A request's trace is drawn by the request middleware (`shared.tracing.server_span`)
before any span exists, so that a trace not kept costs nothing but its ids. The span a
kept request then gets is a `RequestSpan`: the SDK's tracer would run the sampler again
for a decision already made, check each attribute into a bounded mapping and give the
span a lock of its own, 18 us of CPU per span against 3 for this one, and at one trace in
ten that difference alone was 5% of a cached read. Everything else (a call to another
service, an SQL statement, an event published or consumed) is the SDK's span, a child of
this one through the context; any new root among them is drawn by the SDK's standard
sampler at the same share.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

_SCOPE = InstrumentationScope("shared")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class RequestSpan(trace.Span, ReadableSpan):
    """The SERVER span of one request of a kept trace: recording until it ends, then
    handed to the span processor as the `ReadableSpan` it also is (as the SDK's own span
    is both)."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        resource: Resource,
        attributes: dict[str, Any],
        processor: SpanProcessor,
    ) -> None:
        ReadableSpan.__init__(
            self,
            name,
            context,
            parent,
            resource,
            attributes,
            kind=SpanKind.SERVER,
            start_time=time.time_ns(),
            instrumentation_scope=_SCOPE,
        )
        self._attributes: dict[str, Any] = attributes
        self._processor = processor

    # It keeps whatever it is given: nothing is dropped (the `ReadableSpan`'s own answers
    # ask whether its collections are bounded, on every span the encoder writes).
    @property
    def dropped_attributes(self) -> int:
        return 0

    @property
    def dropped_events(self) -> int:
        return 0

    @property
    def dropped_links(self) -> int:
        return 0

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always given

    def is_recording(self) -> bool:
        return self._end_time is None

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK's span: OK is final, and a description only goes with an error.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        self._status = status if isinstance(status, Status) else Status(status, description)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            event = Event(name, attributes, timestamp or time.time_ns())
            self._events = (*self._events, event)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event with the attributes the SDK's span gives it."""
        kind = type(exception)
        recorded: dict[str, Any] = {
            EXCEPTION_TYPE: kind.__qualname__
            if kind.__module__ in ("", "builtins")
            else f"{kind.__module__}.{kind.__qualname__}",
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        recorded.update(attributes or {})
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        self._processor.on_end(self)


class RequestSpans:
    """Starts the `RequestSpan`s of a process, which end in `processor`."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        self._processor = processor
        self._resource = resource
        self._ids = RandomIdGenerator()

    def start(self, method: str, path: str, traceparent: str | None) -> RequestSpan:
        """A request's span, continuing `traceparent` (valid, as `valid_traceparent`
        returns it) or the root of a new trace."""
        parent: SpanContext | None = None
        if traceparent is None:
            trace_id = self._ids.generate_trace_id()
        else:
            trace_id = int(traceparent[3:35], 16)
            parent = SpanContext(
                trace_id,
                int(traceparent[36:52], 16),
                is_remote=True,
                trace_flags=TraceFlags(int(traceparent[53:55], 16)),
            )
        context = SpanContext(trace_id, self._ids.generate_span_id(), False, _SAMPLED)
        attributes = {"http.request.method": method, "url.path": path}
        return RequestSpan(method, context, parent, self._resource, attributes, self._processor)
