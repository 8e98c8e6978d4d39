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

Code that runs for one request in ten runs cold: measured in-process (bench/kept_trace.py
at one trace in ten), each call on a kept request's path cost several times what it costs
in a loop, while the same work done for a batch of spans at export costs what the loop
says. So a `RequestSpan` does in the request only what must happen then (two clock
readings, the context made current, the route and status kept) and makes its ids, name
and attributes when the exporter reads them: 17.6 / 22.0 -> 11.4 / 13.1 us of CPU a kept
trace (two alternating runs, the driver then awaiting every request in one task).
"""

from __future__ import annotations

import time
import traceback
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESSED
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.instrumentation.utils import (
    _SUPPRESS_INSTRUMENTATION_KEY_PLAIN as _SUPPRESSED_PLAIN,
)
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

from shared.otlp import (
    MEMO_MAX_BYTES,
    SPAN_ENCODERS,
    LoopSpanProcessor,
    encode_span,
    span_attribute,
    span_attributes,
    span_message,
    span_name_and_kind,
)
from shared.tracing import end_current

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import Token
    from types import TracebackType


_SCOPE = InstrumentationScope("shared")
#: The attributes every request span has, first and in this order (`RequestSpan.encoded`
#: writes them as `attributes` gives them).
_METHOD = "http.request.method"
_PATH = "url.path"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


def _context_variable() -> ContextVar[Context] | None:
    """The context variable OpenTelemetry keeps its current context in, when its runtime
    context is its standard one (`ContextVarsRuntimeContext`, unless `OTEL_PYTHON_CONTEXT`
    names another)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    standard = type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar)
    return variable if standard else None


#: OpenTelemetry's current context read, set and reset for a request span: on its context
#: variable itself where it has the standard one, else through the API. Each API call is
#: two calls of Python's (`attach` calls the runtime context's), and calls on a kept
#: request's path run cold: made current and reset through the API, a request span cost
#: the served read about 7 us of CPU, against 0.7 in a loop (every trace kept; README,
#: "Fewer calls on a request's path").
_CONTEXT = _context_variable()
_current_context: Callable[[], Context] = (
    otel_context.get_current if _CONTEXT is None else _CONTEXT.get
)
_attach: Callable[[Context], Token[Context]] = (
    otel_context.attach if _CONTEXT is None else _CONTEXT.set
)
_detach: Callable[[Token[Context]], None] = (
    otel_context.detach if _CONTEXT is None else _CONTEXT.reset
)


def _span_key() -> str:
    """The key a context holds its current span under: whatever `trace.set_span_in_context`
    sets, asked of it once (a request span makes its context itself, two calls fewer)."""
    [key] = trace.set_span_in_context(trace.INVALID_SPAN, Context()).keys()
    return key


_SPAN_KEY = _span_key()


class RequestSpan(trace.Span, ReadableSpan):
    """The SERVER span of one request of a kept trace: recording until it ends, then
    handed to the span processor as the `ReadableSpan` it also is (as the SDK's own span
    is both).

    What the request gives it is kept as it comes (method, path, the caller's
    `traceparent`, route, status) and the span's fields are made from it when first
    read: its ids, name and attributes once it is exported with others of its batch,
    unless something (a child span, a log line) asks for its context before. A kept
    cached read then spends on its span little more than two clock readings.
    """

    # What every request's span starts with, until the request changes it (class
    # attributes: a span is made with five fields of its own rather than thirteen).
    _route: str | None = None
    _status_code: int | None = None
    _extra: dict[str, Any] | None = None
    _renamed: str | None = None
    _span_context: SpanContext | None = None
    _ids: tuple[int, int] | None = None
    _status = _UNSET
    _events: tuple[Event, ...] = ()
    _end_time: int | None = None

    # ReadableSpan's __init__ is not called: each of its fields is a property here.
    def __init__(
        self,
        spans: RequestSpans,
        method: str,
        path: str,
        traceparent: str | None,
        outer: Context,
    ) -> None:
        self._spans = spans
        self._outer = outer
        self._method = method
        self._path = path
        self._traceparent = traceparent
        self._start_time = time.time_ns()

    # --- ReadableSpan ---------------------------------------------------------------

    @property
    def name(self) -> str:
        if self._renamed is not None:
            return self._renamed
        return _name(self._method, self._route)

    @property
    def context(self) -> SpanContext:
        span_context = self._span_context
        if span_context is None:
            trace_id, span_id = self.ids()
            span_context = self._span_context = SpanContext(trace_id, span_id, False, _SAMPLED)
        return span_context

    def ids(self) -> tuple[int, int]:
        """Its trace id and span id, made when first asked for (on the event loop's thread,
        where the request is): its `context` has them, yet the exporter needs only these
        (a `SpanContext` checks them as it is made: 0.7 us)."""
        ids = self._ids
        if ids is None:
            ids = self._ids = self._spans.ids(self._traceparent)
        return ids

    @property
    def parent(self) -> SpanContext | None:
        traceparent = self._traceparent
        if traceparent is None:
            return None
        return SpanContext(
            int(traceparent[3:35], 16),
            int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(traceparent[53:55], 16)),
        )

    @property
    def kind(self) -> SpanKind:
        return SpanKind.SERVER

    @property
    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {_METHOD: self._method, _PATH: self._path}
        attributes.update(_served_attributes(self._route, self._status_code))
        if self._extra:
            attributes.update(self._extra)
        return attributes

    @property
    def events(self) -> tuple[Event, ...]:
        return self._events

    @property
    def links(self) -> tuple[()]:
        return ()

    @property
    def resource(self) -> Resource:
        return self._spans.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return _SCOPE

    @property
    def instrumentation_info(self) -> None:
        return None

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

    def to_json(self, indent: int | None = 4) -> str:
        """As the SDK's span writes it (its console exporter does), from a copy made of
        this span's properties: the SDK's own reads fields this span does not keep."""
        written: str = ReadableSpan(
            self.name,
            self.context,
            self.parent,
            self.resource,
            self.attributes,
            self.events,
            (),
            SpanKind.SERVER,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=_SCOPE,
        ).to_json(indent)
        return written

    def encoded(self) -> bytes:
        """Its OTLP Span message, written from what the request gave (`shared.otlp`'s
        encoder calls this): what requests with the same method, route and status share
        (the name, kind and all attributes but the path) encoded once."""
        if self._extra or self._events or self._renamed is not None or self._status.description:
            return encode_span(self)  # a span of another shape than a request's own
        key = (self._method, self._route, self._status_code)
        shape = _shapes.get(key)
        if shape is None:
            if len(_shapes) >= _MEMO_LIMIT:  # the method is the client's to choose
                _shapes.clear()
            shape = _shapes[key] = _shape(self._method, self._route, self._status_code)
        path = _paths.get(self._path)
        if path is None:
            path = span_attribute(_PATH, self._path)
            if len(path) <= MEMO_MAX_BYTES:
                if len(_paths) >= _MEMO_LIMIT:
                    _paths.clear()
                _paths[self._path] = path
        # The attributes in the order `attributes` gives them.
        description = shape[0] + path + shape[1]
        trace_id, span_id = self.ids()
        traceparent = self._traceparent
        start, end = self._start_time, self._end_time
        assert start is not None  # set when made
        assert end is not None  # exported once ended
        return span_message(
            trace_id,
            span_id,
            None if traceparent is None else int(traceparent[36:52], 16),
            description,
            start,
            end,
            self._status.status_code,
        )

    # --- current while the request is served ----------------------------------------

    def __enter__(self) -> RequestSpan:
        # What `trace.set_span_in_context(self, self._outer)` makes.
        self._token = _attach(Context({**self._outer, _SPAN_KEY: self}))
        del self._outer
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Let go of the token, and with it of the request's context, while the span waits
        # in the export queue.
        token = self._token
        del self._token
        if error is not None:
            end_current(self, token, error)
            return
        _detach(token)
        if self._end_time is None:  # what `end` does, one call fewer
            self._end_time = time.time_ns()
            self._spans.ended(self)

    # --- Span -----------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self._end_time is None

    def served(self, route: str, status_code: int) -> None:
        """The request's route template and response status: the span's name and its
        `http.route` and `http.response.status_code`; a 5xx makes its status an error."""
        if self._end_time is None:
            self._route = route
            self._status_code = status_code
            if status_code >= 500:
                self.set_status(StatusCode.ERROR)

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._renamed = name

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Any) -> None:
        if self._end_time is None:
            if self._extra is None:
                self._extra = {}
            self._extra.update(attributes)

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
        self._spans.ended(self)


def _name(method: str, route: str | None) -> str:
    """A request span's name: its method, and its route once known."""
    return method if route is None else f"{method} {route}"


def _served_attributes(route: str | None, status_code: int | None) -> dict[str, Any]:
    """The attributes a request span gains once served (`RequestSpan.served`)."""
    if route is None:
        return {}
    return {"http.route": route, "http.response.status_code": status_code}


def _shape(method: str, route: str | None, status_code: int | None) -> tuple[bytes, bytes]:
    """What the Span message of a request span has before its path (its name, kind and
    method) and after it (its route and status), encoded."""
    before = span_name_and_kind(_name(method, route), SpanKind.SERVER)
    return (
        before + span_attributes({_METHOD: method}),
        span_attributes(_served_attributes(route, status_code)),
    )


#: `_shape` by method, route and status (requests repeat a few of them), and the path's
#: attribute by path (the same few are read most; not a long one), for
#: `RequestSpan.encoded`.
_shapes: dict[tuple[str, str | None, int | None], tuple[bytes, bytes]] = {}
_paths: dict[str, bytes] = {}
_MEMO_LIMIT = 4096
SPAN_ENCODERS[RequestSpan] = RequestSpan.encoded


class RequestSpans:
    """Starts the `RequestSpan`s of a process, which end in `processor`."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        self.resource = resource
        #: Where an ended span goes: straight into the export queue (a request span is
        #: sampled, and asking its context would make its ids now), else the processor.
        self.ended = (
            processor.queue if isinstance(processor, LoopSpanProcessor) else processor.on_end
        )
        self._id_generator = RandomIdGenerator()

    def start(self, method: str, path: str, traceparent: str | None) -> RequestSpan | None:
        """A request's span, continuing `traceparent` (valid, as `valid_traceparent`
        returns it) or the root of a new trace; None where instrumentation is suppressed
        (`shared.tracing.untraced`).

        What `is_instrumentation_enabled` asks, asked of the current context read once,
        which the span is then made current in: each lookup of the current context is
        two calls of the API's, and calls on a kept request's path run cold."""
        current = _current_context()
        if current.get(_SUPPRESSED) or current.get(_SUPPRESSED_PLAIN):
            return None
        return RequestSpan(self, method, path, traceparent, current)

    def ids(self, traceparent: str | None) -> tuple[int, int]:
        """The trace and span ids of a new span continuing `traceparent`, or of a new
        trace's root."""
        trace_id = (
            self._id_generator.generate_trace_id()
            if traceparent is None
            else int(traceparent[3:35], 16)
        )
        return trace_id, self._id_generator.generate_span_id()
