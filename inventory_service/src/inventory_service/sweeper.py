"""Reservations that outlive their TTL give their stock back.

A task in each process (`ServiceBuilder.add_sweeper`) sweeps every
`RESERVATION_SWEEP_SECONDS`; several processes may sweep at once, since each release is
the same conditional status change a commit or a release makes (whichever comes first
wins, the others change nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from inventory_service.service import ReservationService
from shared.db import Database, utcnow
from shared.sweeps import SweepReport


async def release_expired_reservations(
    database: Database, *, batch_size: int = 100, now: datetime | None = None
) -> int:
    """Release every reservation still held past its expiry at `now` (default: this
    instant), `batch_size` at a time; returns how many this call released."""
    now = now or utcnow()
    released = 0
    while True:
        async with database.sessionmaker() as session:
            found, batch_released = await ReservationService(session).release_expired(
                now, batch_size
            )
        released += batch_released
        # Each found reservation left `reserved` (here or elsewhere), so this ends.
        if found < batch_size:
            return released


@dataclass
class ExpirySweepReport(SweepReport):
    released: int = 0


class Sweeper:
    def __init__(self, database: Database, *, batch_size: int) -> None:
        self.database = database
        self.batch_size = batch_size

    async def sweep(self, now: datetime | None = None) -> ExpirySweepReport:
        """Release what has expired at `now` (default: this instant)."""
        released = await release_expired_reservations(
            self.database, batch_size=self.batch_size, now=now
        )
        return ExpirySweepReport(released=released)
