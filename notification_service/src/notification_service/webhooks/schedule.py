"""What an attempt's outcome means for a delivery, and when the next attempt is due.

A 2xx is delivered. A network error, a timeout, a 429 or a 5xx is retried after a
pause that doubles from `base` up to `maximum`, jittered by up to a fifth either way so
that many deliveries that failed together do not come back together; a `Retry-After`
longer than that pause is honoured. Any other answer (a 3xx: redirects are not followed;
a 4xx but 429) fails the delivery at once: sending it again would get the same answer.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

JITTER = 0.2


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


def judge(response_status: int | None) -> Verdict:
    """`None` stands for no answer at all (a network error or a timeout)."""
    if response_status is None or response_status == 429 or response_status >= 500:
        return Verdict.RETRY
    if 200 <= response_status < 300:
        return Verdict.SUCCEEDED
    return Verdict.FAILED


def retry_delay(
    attempts: int,
    *,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1, 2, ...)."""
    pause: float = min(base * 2.0 ** max(attempts - 1, 0), maximum)
    pause *= 1 + (rng or random).uniform(-JITTER, JITTER)
    if retry_after is not None:
        pause = max(pause, min(retry_after, maximum))
    return pause


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def next_attempt_at(now: datetime, retry_until: datetime, delay_seconds: float) -> datetime | None:
    """When to try again, or None when the retry window is over (the delivery fails).

    The last retry may land a little after `retry_until`, so that a delivery is retried
    for at least the whole window."""
    if now >= retry_until:
        return None
    return now + timedelta(seconds=delay_seconds)
