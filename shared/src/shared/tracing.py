"""W3C trace context (https://www.w3.org/TR/trace-context/): the `traceparent` of the
work in progress, carried from an HTTP request into the events it causes and from a
consumed event into the events its handler causes, and into every log line."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

#: The `traceparent` of the work in progress: an HTTP request's (set by the request
#: middleware) or a consumed event's (set by the event consumer).
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)


def valid_traceparent(value: str | None) -> str | None:
    """`value` when it is a version-00 traceparent with non-zero ids, else None."""
    if not value or len(value) > 64:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(0)


def current_trace_id() -> str | None:
    current = traceparent_var.get()
    return current.split("-")[1] if current else None


def outgoing_traceparent() -> str:
    """A traceparent for a message sent now: the current trace continued with a new
    parent id, or a new sampled trace when there is none."""
    current = traceparent_var.get()
    if current is None:
        return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    _, trace_id, _, flags = current.split("-")
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
