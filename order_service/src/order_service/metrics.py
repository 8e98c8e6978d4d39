"""Prometheus metrics of the order service (served by the shared /metrics route)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from order_service.states import CancelReason, OrderStatus

ORDERS = Counter(
    "orders",
    "Orders that reached each status (checkout outcome, shipping, cancellation), by "
    "cancel reason for cancelled ones.",
    ["status", "cancel_reason"],
)
CHECKOUT_STEP_SECONDS = Histogram(
    "checkout_step_duration_seconds",
    "Time each checkout saga step took, by step and outcome (ok or error).",
    ["step", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def count_order(status: OrderStatus, cancel_reason: CancelReason | None = None) -> None:
    ORDERS.labels(status.value, cancel_reason.value if cancel_reason else "").inc()


@contextmanager
def timed_step(step: str) -> Iterator[None]:
    """Observe how long the block took as `step`; an exception counts as an error."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        CHECKOUT_STEP_SECONDS.labels(step, outcome).observe(time.perf_counter() - started)
