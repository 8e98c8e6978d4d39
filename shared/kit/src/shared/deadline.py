"""Time budgets that travel with a request across hops.

Every request a process serves gets a deadline: its caller's `X-Request-Budget-Ms` (the
milliseconds the caller will still wait), never more than the process's own
`REQUEST_BUDGET_SECONDS`. Each call to another service (`shared.http`) waits at most
what is left, and tells the callee what is left minus a margin to answer in, so the
budget shrinks at each hop and every caller hears a 503/504 within its own budget
instead of its callee's. A budget is relative (milliseconds left), not a wall-clock
time: hosts' clocks need not agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

BUDGET_HEADER = "x-request-budget-ms"
#: What a hop keeps of its budget to turn its callee's failure into its own answer.
ANSWER_MARGIN_SECONDS = 0.25
#: Less time left than this is no time: the call is not made (504 at once).
MIN_CALL_SECONDS = 0.05

#: `time.monotonic()` by which the current request must be answered; None: no deadline.
_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def parse_budget(value: str | bytes | None) -> float | None:
    """Seconds from a budget header, or None when absent or not a sane number."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not text.isdigit() or len(text) > 9:
        return None
    return int(text) / 1000


def start_deadline(budget_seconds: float | None) -> Token[float | None]:
    """Put what follows in this context under a deadline `budget_seconds` from now
    (None: no deadline), until `end_deadline` with the token returned."""
    return _deadline.set(None if budget_seconds is None else time.monotonic() + budget_seconds)


def end_deadline(token: Token[float | None]) -> None:
    _deadline.reset(token)


@contextmanager
def request_deadline(budget_seconds: float | None) -> Iterator[None]:
    """Run the block under a deadline `budget_seconds` from now (None: no deadline)."""
    token = start_deadline(budget_seconds)
    try:
        yield
    finally:
        end_deadline(token)


def remaining() -> float | None:
    """Seconds left until the current deadline (may be negative); None without one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def detached() -> None:
    """Forget the deadline in the current context: work that goes on after the answer
    (a compensation in a background task) is not bound by the request's budget."""
    _deadline.set(None)
