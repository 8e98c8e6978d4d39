"""Prometheus metrics of the inventory service (served by the shared /metrics route)."""

from __future__ import annotations

from prometheus_client import Counter

#: Release reasons given their own label value; any other is counted as "other", so a
#: caller cannot grow the label set without bound.
KNOWN_RELEASE_REASONS = frozenset(
    {"cancelled", "cancelled_by_user", "payment_declined", "out_of_stock", "expired"}
)

RESERVATIONS = Counter(
    "inventory_reservations",
    "Reservation outcomes: reserved, sold (a paid order's units sold at once), "
    "insufficient (refused for short stock), replayed (a "
    "repeated request answered from the first), committed, released (by reason) and "
    "expired (released by the expiry sweep), restocked (refunded units back on sale).",
    ["outcome", "reason"],
)


def count_reservation(outcome: str, reason: str | None = None) -> None:
    label = "" if reason is None else reason if reason in KNOWN_RELEASE_REASONS else "other"
    RESERVATIONS.labels(outcome, label).inc()


def _initialise() -> None:
    """Publish every usual series at 0, so rates work from the first scrape."""
    for outcome in ("reserved", "sold", "insufficient", "replayed", "committed"):
        RESERVATIONS.labels(outcome, "")
    for reason in KNOWN_RELEASE_REASONS - {"expired"}:
        RESERVATIONS.labels("released", reason)
    RESERVATIONS.labels("released", "other")
    RESERVATIONS.labels("expired", "expired")


_initialise()
