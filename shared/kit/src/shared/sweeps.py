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
from typing import Protocol

from shared.tracing import untraced

logger = logging.getLogger(__name__)


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
    """A sweeper and the task that runs it every `interval_seconds` until stopped."""

    def __init__(self, sweeper: Sweeper, *, name: str, interval_seconds: float) -> None:
        self.sweeper = sweeper
        self.name = name
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """One pass now, beside the background ones (tests, operators)."""
        return await self.sweeper.sweep(now)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def cancelled(self) -> bool:
        return self._task is not None and self._task.cancelled()

    async def _run_forever(self) -> None:
        """Sweep until cancelled; a failed pass is logged and tried again."""
        while True:
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
            await asyncio.sleep(self.interval_seconds)
