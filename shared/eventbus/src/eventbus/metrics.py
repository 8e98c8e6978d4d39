"""Prometheus metrics of the events machinery (served by the shared /metrics route)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_BACKLOG = Gauge(
    "outbox_backlog",
    "Outbox events not yet published (confirmed by the broker), by service.",
    ["service"],
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox event not yet published (0 when none), by service.",
    ["service"],
)
EVENTS_PUBLISHED = Counter(
    "events_published",
    "Events the broker confirmed, by event type.",
    ["type"],
)
EVENT_PUBLISH_FAILURES = Counter(
    "event_publish_failures",
    "Events not published on a try (kept pending), by reason: unroutable (the events "
    "exchange's alternate exchange is missing: a topology fault), refused (the broker "
    "nacked it), broker_unavailable.",
    ["reason"],
)
EVENTS_CONSUMED = Counter(
    "events_consumed",
    "Events a consumer received, by event type and outcome: processed, duplicate (already "
    "processed, acknowledged without effect), unhandled (no handler), retried (the "
    "handler failed; handed back), dead_lettered.",
    ["type", "outcome"],
)
EVENTS_DEAD_LETTERED = Counter(
    "events_dead_lettered",
    "Messages a consumer sent to its dead-letter queue, by reason: unparseable (not an "
    "event envelope), failed (the handler failed on every try).",
    ["reason"],
)
EVENT_HANDLING_SECONDS = Histogram(
    "event_handling_duration_seconds",
    "Time to process one event (inbox check, handler and commit), by event type.",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENTS_QUEUE_DEPTH = Gauge(
    "events_queue_depth",
    "Events waiting in a consuming service's queue, not yet handed to it (its lag).",
    ["service"],
)
EVENTS_DEAD_LETTER_DEPTH = Gauge(
    "events_dead_letter_depth",
    "Messages in a consuming service's dead-letter queue, waiting to be looked at.",
    ["service"],
)


def _initialise() -> None:
    """Publish the dead-letter series at 0, so an alert on their rate works from the start."""
    for reason in ("unparseable", "failed"):
        EVENTS_DEAD_LETTERED.labels(reason)


_initialise()
