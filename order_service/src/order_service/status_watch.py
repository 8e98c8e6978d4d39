"""Live order status: what `GET /v1/orders/{id}/stream` sends, and how a process learns
of changes made by any replica.

Every change of an order commits to the one database the replicas share, so a process
learns of them by reading the rows of the orders its clients watch: one primary-key
query per tick for all of them (`poll_seconds`, 0.25 s), and none while nobody
watches. A commit in this process that staged an order event wakes the reader at once,
so a change made here is sent within milliseconds, one made by another replica within a
tick. This works the same on SQLite (several processes on one file) and PostgreSQL,
needs no trigger or broker (a stream keeps working while RabbitMQ is down), and costs
the same for one stream as for thousands. Two changes within one tick are sent as the
later one; the final status always arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sse_starlette import ServerSentEvent

from eventbus.outbox import on_outbox_commit
from order_service.models import PurchaseOrder
from order_service.states import OrderStatus
from shared.db import Database

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({OrderStatus.DELIVERED, OrderStatus.CANCELLED})
#: The column arrives with refunds; until then nothing was refunded.
_REFUNDED_AMOUNT: Any = getattr(PurchaseOrder, "refunded_amount", None)


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    user_id: uuid.UUID
    status: OrderStatus
    cancel_reason: str | None
    refunded_amount: Decimal
    at: datetime

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def same_state(self, other: StatusSnapshot | None) -> bool:
        return other is not None and (
            self.status,
            self.cancel_reason,
            self.refunded_amount,
        ) == (other.status, other.cancel_reason, other.refunded_amount)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "cancel_reason": self.cancel_reason,
            "refunded_amount": f"{self.refunded_amount:.2f}",
            "at": self.at.isoformat(),
        }


class OrderStatusWatch:
    """One per process, made in the lifespan."""

    def __init__(self, database: Database, *, poll_seconds: float = 0.25) -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self._watchers: defaultdict[uuid.UUID, set[asyncio.Queue[StatusSnapshot]]] = defaultdict(
            set
        )
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_waking: Callable[[], None] | None = None

    async def start(self) -> None:
        self._stop_waking = on_outbox_commit(self.database.engine, self._changed.set)

    async def stop(self) -> None:
        if self._stop_waking is not None:
            self._stop_waking()
        await self._cancel_reader()

    async def current(self, order_id: uuid.UUID) -> StatusSnapshot | None:
        return (await self._read([order_id])).get(order_id)

    @contextlib.asynccontextmanager
    async def watch(self, order_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[StatusSnapshot]]:
        """A queue of the order's snapshots read from now on (duplicates possible);
        leaving the block forgets it, and the reader stops with the last watcher."""
        queue: asyncio.Queue[StatusSnapshot] = asyncio.Queue()
        self._watchers[order_id].add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="order-status-watch")
        try:
            yield queue
        finally:
            watchers = self._watchers.get(order_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[order_id]

    async def _cancel_reader(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self._watchers:
            self._changed.clear()
            try:
                snapshots = await self._read(list(self._watchers))
            except Exception:
                logger.warning("watched orders could not be read", exc_info=True)
            else:
                for order_id, snapshot in snapshots.items():
                    for queue in self._watchers.get(order_id, ()):
                        queue.put_nowait(snapshot)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._changed.wait()

    async def _read(self, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, StatusSnapshot]:
        columns: list[Any] = [
            PurchaseOrder.id,
            PurchaseOrder.user_id,
            PurchaseOrder.status,
            PurchaseOrder.cancel_reason,
            PurchaseOrder.updated_at,
        ]
        if _REFUNDED_AMOUNT is not None:
            columns.append(_REFUNDED_AMOUNT)
        statement = select(*columns).where(PurchaseOrder.id.in_(order_ids))
        async with self.database.sessionmaker() as session:
            rows: list[Any] = list((await session.execute(statement)).all())
        return {
            row[0]: StatusSnapshot(
                user_id=row[1],
                status=OrderStatus(row[2]),
                cancel_reason=None if row[3] is None else str(row[3]),
                refunded_amount=Decimal(row[5]) if len(row) > 5 else Decimal("0.00"),
                at=row[4],
            )
            for row in rows
        }


async def status_events(
    watch: OrderStatusWatch, order_id: uuid.UUID, first: StatusSnapshot
) -> AsyncIterator[ServerSentEvent]:
    """The stream's events: the status now, then each change, until a final status.
    Leaving early (the client went away) forgets the watch at once."""
    async with watch.watch(order_id) as changes:
        # Read again inside the watch: a change between the caller's read and the
        # watch starting is then not missed.
        last = await watch.current(order_id) or first
        yield _event(last)
        while not last.is_final:
            snapshot = await changes.get()
            if snapshot.same_state(last):
                continue
            last = snapshot
            yield _event(last)


def _event(snapshot: StatusSnapshot) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(snapshot.to_json()), event="status")
