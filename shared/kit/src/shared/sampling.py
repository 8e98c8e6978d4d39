"""The sampler of a process that traces (imported only then: it needs the SDK).

`OTEL_TRACES_SAMPLER_ARG` of the new traces are kept. A request's trace is drawn by the
request middleware (`shared.tracing.server_span`) before any span exists, so that a
trace not kept costs nothing but its ids; the SERVER root span it then makes must be
kept, not drawn a second time. Any other root (an event consumed without a trace, work
in the background) is drawn here by its trace id; a child follows its parent, so a
trace is never cut in half.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class _RequestRoots(Sampler):
    """Keeps every SERVER root (drawn already), draws any other root at `share`."""

    def __init__(self, share: float) -> None:
        self._others = TraceIdRatioBased(share)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = ALWAYS_ON if kind is SpanKind.SERVER else self._others
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestRoots{{{self._others.get_description()}}}"


def request_roots_sampler(share: float) -> Sampler:
    """A child follows its parent; a request's root is kept as the middleware drew it;
    another root is drawn at `share`."""
    return ParentBased(root=_RequestRoots(share))
