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

#: How long `RunningSweep.stop` lets a pass in progress finish before cutting it off.
STOP_PASS_SECONDS = 5.0


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

    Stopping lets a pass in progress finish (`STOP_PASS_SECONDS` at most): cancelled in
    the middle of a write, a pass could leave its connection's transaction open until a
    garbage collection, and on SQLite the database locked meanwhile."""

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
        try:
            async with asyncio.timeout(STOP_PASS_SECONDS):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
