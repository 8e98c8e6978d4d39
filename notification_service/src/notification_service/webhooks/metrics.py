"""Prometheus metrics of webhook deliveries."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOK_ATTEMPTS = Counter(
    "webhook_delivery_attempts_total",
    "Attempts to deliver a webhook, by outcome: succeeded, retry (to be tried again) or "
    "failed (given up).",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Deliveries finished, by final status (succeeded or failed).",
    ["status"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "webhook_delivery_attempt_duration_seconds",
    "Time one attempt took, until the endpoint answered or the attempt failed.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOK_DELIVERY_LATENCY_SECONDS = Histogram(
    "webhook_delivery_latency_seconds",
    "From the event's delivery row being written to the endpoint's 2xx.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0),
)
WEBHOOK_PENDING = Gauge(
    "webhook_deliveries_pending", "Deliveries waiting to be sent or retried (all replicas)."
)
WEBHOOK_OLDEST_PENDING_SECONDS = Gauge(
    "webhook_oldest_pending_delivery_age_seconds",
    "Age of the oldest pending delivery (0 when none is pending).",
)
