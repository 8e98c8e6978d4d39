"""Background sweeps: repair work each process of a service runs every few seconds
(expired reservations, abandoned checkouts). Every service's sweep has the same shape:
a `Sweeper` in its `sweeper.py` whose `sweep(now)` does one pass and returns a
`SweepReport`, run by `ServiceBuilder.add_sweeper`.

Several processes may sweep at once: a sweep's changes must be conditional updates that
only one of them wins."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from datetime import datetime
from typing import Any, Protocol

from shared.tracing import untraced

logger = logging.getLogger(__name__)

#: How long a background loop asked to stop may take to finish its pass.
STOP_PASS_SECONDS = 5.0


async def finish_or_cancel(task: asyncio.Task[Any], seconds: float = STOP_PASS_SECONDS) -> None:
    """Wait for `task`, a background loop asked to stop, to end by itself: `seconds` at
    most, then cancel it. Cut off in the middle of a write, a pass could leave its
    connection's transaction open until a garbage collection found the connection, and
    on SQLite the database locked meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclasses.dataclass
class SweepReport:
    """What one pass did, as counts (fields of a subclass); falsy when it did nothing."""

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))


class Sweeper(Protocol):
    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """One pass over everything due at `now` (default: this instant)."""
        ...


class RunningSweep:
    """A sweeper and the task that runs it every `interval_seconds` until stopped.

    Stopping lets a pass in progress finish (`finish_or_cancel`)."""

    def __init__(self, sweeper: Sweeper, *, name: str, interval_seconds: float) -> None:
        self.sweeper = sweeper
        self.name = name
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """One pass now, beside the background ones (tests, operators)."""
        return await self.sweeper.sweep(now)

    def start(self) -> None:
        self._stopping = asyncio.Event()  # of the loop that runs it
        self._task = asyncio.create_task(self._run_forever(), name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        await finish_or_cancel(self._task)

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def _run_forever(self) -> None:
        """Sweep until stopped; a failed pass is logged and tried again."""
        while not self._stopping.is_set():
            try:
                with untraced():  # a trace per pass would bury the ones that matter
                    report = await self.sweeper.sweep()
            except Exception:
                logger.exception("a sweep failed", extra={"sweep": self.name})
            else:
                if report:
                    logger.info(
                        "sweep repaired", extra={"sweep": self.name, **dataclasses.asdict(report)}
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_seconds):
                    await self._stopping.wait()
