"""Reservations that outlive their TTL give their stock back.

A background task in each process sweeps every `RESERVATION_SWEEP_SECONDS`; several
processes may sweep at once, since each release is the same conditional status change
a commit or a release makes (whichever comes first wins, the others change nothing)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from inventory_service.service import ReservationService
from shared.db import Database, utcnow
from shared.tracing import untraced

logger = logging.getLogger(__name__)


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


async def sweep_expired_reservations(
    database: Database, *, interval_seconds: float, batch_size: int
) -> None:
    """Sweep forever (until cancelled); a failed sweep is logged and tried again."""
    while True:
        try:
            with untraced():  # a trace per pass would bury the ones that matter
                released = await release_expired_reservations(database, batch_size=batch_size)
        except Exception:
            logger.exception("expired reservations could not be released")
        else:
            if released:
                logger.info("released expired reservations", extra={"released": released})
        await asyncio.sleep(interval_seconds)
