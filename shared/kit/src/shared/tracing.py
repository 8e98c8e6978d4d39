"""Traces: OpenTelemetry when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace context
(https://www.w3.org/TR/trace-context/) always.

With an exporter configured, a process makes spans for the requests it serves (the
request middleware), the calls it makes to other services (`shared.http`), its SQL
(SQLAlchemy), and each event it publishes and consumes; `traceparent` carries the
context from one to the next, through the outbox too, so a checkout is one trace from
the gateway to the consumers of its events. Without one no span is made at all: the
`traceparent` that came in is only passed on, so the log lines of one piece of work still
share its trace id.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from contextvars import ContextVar
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.semconv.metrics import MetricInstruments
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from contextvars import Token
    from types import TracebackType

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

    from shared.config import ServiceSettings
    from shared.otlp import LoopSpanProcessor
    from shared.spans import RequestSpan, RequestSpans

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class NewUnkeptTrace:
    """The `traceparent` of a request that starts a trace which is not kept, made the
    first time something asks for it: a log line, a call, an event. Most such requests
    (a cached read) never do, and making the ids cost 2 us of the gateway's 95. (No
    `__init__`: making one is then as cheap as making an `object()`.)"""

    __slots__ = ("_traceparent",)
    _traceparent: str

    @property
    def traceparent(self) -> str:
        try:
            return self._traceparent
        except AttributeError:
            made = self._traceparent = (
                f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-00"
            )
            return made


#: The `traceparent` of the work in progress when it has no span (tracing off, or a
#: request whose trace is not kept): an HTTP request's (set by the request middleware) or
#: a consumed event's (set by the event consumer). Read it with `incoming_traceparent`.
traceparent_var: ContextVar[str | NewUnkeptTrace | None] = ContextVar("traceparent", default=None)


def incoming_traceparent() -> str | None:
    """The `traceparent` of the work in progress when it has no span (`traceparent_var`)."""
    current = traceparent_var.get()
    return current if current is None or isinstance(current, str) else current.traceparent


_propagator = TraceContextTextMapPropagator()
#: The tracer of the provider `enable_tracing` was given (not the API's proxy, which
#: wraps every span in a context manager of its own: a tenth of a span's cost).
_tracer: trace.Tracer = trace.get_tracer("shared")
_enabled = False
#: The SERVER spans of requests (`shared.spans`); set with `_enabled`.
_request_spans: RequestSpans | None = None
#: What exports this process's spans from its event loop (`configure_tracing`).
_loop_processor: LoopSpanProcessor | None = None
#: Share of new traces a request starts that are kept (`OTEL_TRACES_SAMPLER_ARG`).
_sampled_share = 1.0


# --- set-up ----------------------------------------------------------------------------


def configure_tracing(settings: ServiceSettings) -> bool:
    """Export this process's spans by OTLP/HTTP when the settings name an endpoint.

    Once per process (OpenTelemetry has one global tracer provider); True when tracing is
    on. New traces are kept at `OTEL_TRACES_SAMPLER_ARG`; a request that arrives with a
    sampling decision keeps it, so a trace is never cut in half. Spans leave while
    `span_export` runs on the process's event loop.
    """
    global _loop_processor
    endpoint = settings.otel_exporter_otlp_endpoint.strip()
    if _enabled or not endpoint:
        return _enabled
    # Imported here: a process that does not trace never loads the SDK and the exporter.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from shared.otlp import LoopSpanProcessor, SpanExporter

    share = settings.otel_traces_sampler_arg
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": settings.service_name,
                "deployment.environment.name": settings.environment.value,
            }
        ),
        # A request's root is drawn by the middleware (`request_trace`); any other root
        # (an event consumed without a trace, work in the background) here, by its id.
        sampler=ParentBased(root=TraceIdRatioBased(share)),
    )
    _loop_processor = LoopSpanProcessor(SpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    provider.add_span_processor(_loop_processor)
    enable_tracing(provider, _loop_processor, sampled_share=share)
    return True


@asynccontextmanager
async def span_export() -> AsyncIterator[None]:
    """The process's spans exported from the running event loop while open (nothing to
    do when tracing is off); a service's first lifespan part."""
    if _loop_processor is None:
        yield
        return
    async with _loop_processor.exporting():
        yield


def enable_tracing(
    provider: TracerProvider, processor: SpanProcessor, *, sampled_share: float = 1.0
) -> None:
    """Make `provider` this process's (`configure_tracing` calls it; a test may call it
    with an in-memory exporter), keeping `sampled_share` of the traces requests start.
    The SERVER spans of requests, made by `shared.spans` rather than the provider's
    tracer, go to `processor`, one of the provider's."""
    global _enabled, _sampled_share, _tracer, _request_spans
    from shared.spans import RequestSpans

    if trace.get_tracer_provider() is not provider:
        trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("shared")
    _request_spans = RequestSpans(processor, provider.resource)
    _sampled_share = sampled_share
    _enabled = True


def trace_engine(engine: AsyncEngine) -> None:
    """A span for each statement the process's engine runs within a sampled trace (when
    tracing is on).

    OpenTelemetry's SQLAlchemy instrumentation, attached to this engine only. Not through
    its instrumentor: that also wraps `Engine.connect` in every engine of the process with
    a "connect" span of its own, for what is a checkout from the pool (under the checkout
    benchmark, 7% of product_service's CPU with 10% of traces kept)."""
    if not _enabled:
        return
    usage = metrics.get_meter("shared.db").create_up_down_counter(
        name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE, unit="connections"
    )
    _SampledStatements(trace.get_tracer("shared.db"), engine.sync_engine, usage)  # type: ignore[no-untyped-call]


class _SampledStatements(EngineTracer):
    """Spans of the statements of sampled traces only. The instrumentation prepares a
    statement's span (the database's attributes parsed from its URL, a name, a span made
    current and left) in a trace that is not kept too, for a span nobody records: within
    an unsampled trace a statement's span could only be unsampled."""

    def _before_cur_exec(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        params: Any,
        context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        if not trace.get_current_span().is_recording():
            return statement, params
        traced: tuple[str, Any] = super()._before_cur_exec(  # type: ignore[no-untyped-call]
            conn, cursor, statement, params, context, executemany
        )
        return traced


def disable_tracing() -> None:
    """Stop making spans (the provider stays: OpenTelemetry cannot take one back); for
    tests that turned tracing on."""
    global _enabled
    _enabled = False


@contextmanager
def untraced() -> Iterator[None]:
    """No spans from instrumented libraries inside: for background loops that poll
    (the outbox relay, sweepers), whose every pass would otherwise be a trace of its own."""
    if not _enabled:
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield


# --- the context of the work in progress -----------------------------------------------


def valid_traceparent(value: str | None) -> str | None:
    """`value` when it is a version-00 traceparent with non-zero ids, else None."""
    if not value or len(value) > 64:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(0)


def _current_span_context() -> trace.SpanContext | None:
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def current_trace_id() -> str | None:
    span_context = _current_span_context()
    if span_context is not None:
        return trace.format_trace_id(span_context.trace_id)
    current = incoming_traceparent()
    return current.split("-")[1] if current else None


def current_span_id() -> str | None:
    """The id of the span in progress (only when tracing is on)."""
    span_context = _current_span_context()
    return trace.format_span_id(span_context.span_id) if span_context is not None else None


def outgoing_traceparent() -> str:
    """A traceparent for a message sent now: a child of the span in progress, or of the
    trace that came in, or else of a new sampled trace."""
    span_context = _current_span_context()
    if span_context is not None:
        return (
            f"00-{trace.format_trace_id(span_context.trace_id)}-"
            f"{trace.format_span_id(span_context.span_id)}-{int(span_context.trace_flags):02x}"
        )
    current = incoming_traceparent()
    if current is None:
        return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    _, trace_id, _, flags = current.split("-")
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


# --- spans of our own: requests served, calls to other services, events --------------
#
# Written here rather than taken from the FastAPI and httpx instrumentations (or FastAPI's
# native telemetry, which adds spans for dependencies, endpoint and serialization): the
# instrumentation matched each request's route a second time and built dozens of
# attributes, which cost the gateway half its throughput on the reference machine
# (bench/gateway.py --tracing off on), while our middleware and client already know the
# route, the status and the upstream.


def server_span(
    method: str, path: str, traceparent: str | None
) -> AbstractContextManager[RequestSpan | None]:
    """The SERVER span of one request of a kept trace (`request_trace`), current while it
    is served, continuing the caller's trace; `RequestSpan.served` names it once the
    route is known. (The span is its own context manager.)"""
    if not _enabled:
        return nullcontext()
    assert _request_spans is not None  # set with _enabled
    span = _request_spans.start(method, path, traceparent)
    return nullcontext() if span is None else span


class Kept(Enum):
    """What `request_trace` answers for a request whose trace is kept."""

    KEPT = "kept"


KEPT: Final = Kept.KEPT


def request_trace(traceparent: str | None) -> str | NewUnkeptTrace | Literal[Kept.KEPT] | None:
    """How a request is traced, given its caller's `traceparent` (valid, or None): `KEPT`
    when its trace is kept, as its caller decided (the `sampled` flag of its `traceparent`)
    or, for a new trace, drawn at the sampled share; it then gets a SERVER span
    (`server_span`, sampled without asking again). Otherwise the `traceparent` it is
    served under with no span: with tracing off, its caller's as it came (or None); on,
    its caller's (not sampled), or that of a new trace not kept (made when first needed).

    A request not kept gets no span and no OpenTelemetry context, only this in
    `traceparent_var`, as when tracing is off: its log lines, calls, events and queries
    stay in the trace and make no spans either (a span the SDK makes only to drop cost
    about 20 us, a context made current for it 3 to 5, against 30 for the rest of the
    gateway's cached read). One call on every request's path, whichever the answer: on a
    kept request's path and a cold one, each call of Python's costs several times what it
    does in a loop."""
    if not _enabled:
        return traceparent
    if traceparent is None:
        if random.random() < _sampled_share:  # noqa: S311 - sampling, not secrets
            return KEPT
        return NewUnkeptTrace()
    return KEPT if _sampled(traceparent) else traceparent


def _sampled(traceparent: str) -> bool:
    return bool(int(traceparent[-2:], 16) & 0x01)


@contextmanager
def client_span(upstream: str, method: str, url: Any, headers: Any) -> Iterator[Span | None]:
    """A CLIENT span around one call to `upstream`, its context put in `headers` (an
    httpx `Headers`) as `traceparent`. Off, the `traceparent` that came in goes on as it is."""
    if not _enabled or not is_instrumentation_enabled():
        if "traceparent" not in headers and (incoming := incoming_traceparent()):
            headers["traceparent"] = incoming
        yield None
        return
    current = trace.get_current_span().get_span_context()
    if not current.is_valid and (incoming := incoming_traceparent()) and not _sampled(incoming):
        # A request whose trace is not kept (`request_trace`): the callee keeps
        # none either.
        headers["traceparent"] = incoming
        yield None
        return
    if current.is_valid and not current.trace_flags.sampled:
        # A trace not kept: the callee learns so and keeps none either; no span to drop.
        headers["traceparent"] = (
            f"00-{trace.format_trace_id(current.trace_id)}-"
            f"{trace.format_span_id(current.span_id)}-{int(current.trace_flags):02x}"
        )
        yield None
        return
    attributes = {
        "http.request.method": method,
        "url.full": str(url),
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "peer.service": upstream,
    }
    with _Current(_tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)) as span:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        for name, value in carrier.items():
            headers[name] = value
        yield span


def record_response(span: Span | None, status_code: int) -> None:
    if span is None:
        return
    span.set_attribute("http.response.status_code", status_code)
    if status_code >= 500:
        span.set_status(Status(StatusCode.ERROR))


def publish_span(
    event_type: str, message_id: str, exchange: str, traceparent: str | None
) -> Span | None:
    """A PRODUCER span for one event leaving the outbox, a child of the work that wrote
    it (the row's `traceparent`); the caller ends it once the broker has confirmed.
    None when tracing is off or the row's trace is not kept: the message then carries
    the row's `traceparent` as it is."""
    if not _enabled:
        return None
    stored = valid_traceparent(traceparent)
    if stored is not None and not _sampled(stored):
        return None
    return _tracer.start_span(
        f"publish {event_type}",
        context=_parent(stored),
        kind=SpanKind.PRODUCER,
        attributes=_messaging("send", exchange, event_type, message_id),
    )


def message_traceparent(span: Span | None, stored: str | None) -> str | None:
    """What a message's `traceparent` header says: the publish span's context, or (off)
    the one the outbox row kept."""
    if span is None:
        return stored
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", stored)


@contextmanager
def consume_span(
    event_type: str, message_id: str | None, queue: str, traceparent: str | None
) -> Iterator[None]:
    """The context a consumed event is handled in: a CONSUMER span that continues the
    trace of the message's `traceparent` (on), or that `traceparent` itself (off, or a
    trace not kept: as for a request, no span is made only to be dropped)."""
    incoming = valid_traceparent(traceparent)
    if not _enabled or (incoming is not None and not _sampled(incoming)):
        token = traceparent_var.set(incoming)
        try:
            yield
        finally:
            traceparent_var.reset(token)
        return
    with _Current(
        _tracer.start_span(
            f"process {event_type}",
            context=_parent(incoming),
            kind=SpanKind.CONSUMER,
            attributes=_messaging("process", queue, event_type, message_id or ""),
        )
    ):
        yield


class _Current:
    """`span` current inside and ended on the way out, an exception that escapes recorded
    on it: what the SDK's `start_as_current_span` does, without its two layers of context
    managers (a tenth of the cost of a span), and a class rather than a generator (with
    the context attached and detached, 0.75 us against 1.3 in a loop)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end_current(self._span, self._token, error)


def end_current(span: Span, token: Token[Context], error: BaseException | None) -> None:
    """End `span`, made current by `otel_context.attach` (which gave `token`), `error`
    (an exception that escaped it) recorded on it."""
    if isinstance(error, Exception):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    otel_context.detach(token)
    span.end()


def _parent(traceparent: str | None) -> Context | None:
    """The context of a caller's `traceparent` (None: a new trace)."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None


def _messaging(
    operation: str, destination: str, event_type: str, message_id: str
) -> dict[str, str]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": event_type,
        "messaging.message.id": message_id,
    }
