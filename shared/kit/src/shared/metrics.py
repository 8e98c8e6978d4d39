"""Prometheus metrics shared by every process (one registry per process: the default)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests served, by route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time to serve an HTTP request, by route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being served.")

UPSTREAM_REQUESTS = Counter(
    "upstream_requests_total",
    "Calls to other services, by upstream and outcome (status code, timeout, error, circuit_open).",
    ["upstream", "outcome"],
)
UPSTREAM_REQUEST_SECONDS = Histogram(
    "upstream_request_duration_seconds",
    "Time until an upstream answered (headers received), by upstream.",
    ["upstream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CIRCUIT_STATE = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
)

DB_STATEMENTS = Counter(
    "db_statements_total",
    "SQL statements sent to the database, by kind (select, insert, update, delete, other).",
    ["kind"],
)
DB_TRANSACTIONS = Counter(
    "db_transactions_total",
    "Database transactions ended, by outcome (commit, rollback).",
    ["outcome"],
)
