"""Event lag per load window: from an order's commit to its notification being recorded,
for the orders committed while each wrk run lasted, and how long after the last run the
backlog took to drain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: (order committed at, notification recorded at)
Delivery = tuple[datetime, datetime]


@dataclass(frozen=True)
class Window:
    connections: int
    start: datetime
    end: datetime


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def lag_report(
    deliveries: list[Delivery], windows: list[Window], published: list[Delivery] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Printable lines and a JSON-ready summary: p50/p99 per window, drain time after the
    last window. `published` (order committed at, its event published at), when given,
    splits the lag: the part spent in the outbox, before the relay published the event."""
    lines = []
    summary: dict[str, Any] = {}
    for window in windows:
        lags = _lags(deliveries, window)
        p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
        lines.append(
            f"  event lag at {window.connections} connections ({len(lags)} orders):"
            f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        summary[str(window.connections)] = {"orders": len(lags), "p50": p50, "p99": p99}
        if published:
            in_outbox = _lags(published, window)
            p50, p99 = percentile(in_outbox, 0.5), percentile(in_outbox, 0.99)
            lines.append(
                f"    of which in the outbox (commit to publish confirmed):"
                f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
            )
            summary[str(window.connections)]["outbox_p50"] = p50
            summary[str(window.connections)]["outbox_p99"] = p99
    if deliveries and windows:
        last = max(recorded for _, recorded in deliveries)
        drained = max(0.0, (last - windows[-1].end).total_seconds())
        lines.append(f"  backlog drained {drained:.1f} s after the last run ended")
        summary["drained_seconds"] = drained
    return lines, summary


def _lags(pairs: list[Delivery], window: Window) -> list[float]:
    return sorted(
        (later - committed).total_seconds()
        for committed, later in pairs
        if window.start <= committed <= window.end
    )
