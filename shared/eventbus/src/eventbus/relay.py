"""The outbox relay: a background task in each producing process that publishes the
outbox's pending rows with publisher confirms and marks them published only once the
broker has confirmed them.

Guarantees: an event committed to the outbox is published at least once, however long
the broker or this process is down (it is only late); it may be published twice (a
confirm lost with the connection), which consumers absorb with their inbox. Events are
published in about the order they occurred, not strictly (a batch is in flight at once,
batches and replicas publish side by side).

A batch is claimed with `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas
never publish the same rows at once, and a relay does not wait for one batch's confirms
before it claims the rows committed since: up to `max_in_flight` batches are out at
once (the broker's confirm latency, not the relay, then bounds the lag). SQLite (one
process) reads without locking, so there one batch is out at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange
from opentelemetry.trace import Span, Status, StatusCode
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from eventbus.broker import Broker, BrokerUnavailable, Topology, declare_exchange
from eventbus.metrics import (
    EVENT_PUBLISH_FAILURES,
    EVENTS_PUBLISHED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_PENDING_AGE,
)
from eventbus.outbox import OUTBOX, on_outbox_commit
from shared.db import Database, utcnow
from shared.tracing import message_traceparent, publish_span, untraced

logger = logging.getLogger(__name__)

#: Pause before the first retry of an event the broker refused or could not route.
ROW_RETRY_SECONDS = 1.0
#: How often the backlog gauges are refreshed and old published rows purged.
GAUGE_SECONDS = 1.0
PURGE_SECONDS = 300.0


@dataclass(frozen=True)
class _Failure:
    row_id: uuid.UUID
    attempts: int
    reason: str
    error: str


class OutboxRelay:
    """Publishes one service's outbox; `start()` in the lifespan, `stop()` at the end.

    It wakes up after each commit that staged an event (through `on_outbox_commit`) or
    when `notify()` is called, and otherwise polls every `poll_seconds`. Each wake-up
    starts a batch, unless `max_in_flight` are out already: then the next one starts
    as one of them ends, with every row committed meanwhile. Woken with none out, it
    waits `linger_seconds` first, so that events committed a few at a time (two per
    order) leave in one pass rather than one pass each."""

    def __init__(
        self,
        database: Database,
        broker: Broker,
        topology: Topology,
        *,
        service: str,
        batch_size: int = 100,
        poll_seconds: float = 0.5,
        linger_seconds: float = 0.0,
        publish_timeout_seconds: float = 10.0,
        retry_max_seconds: float = 60.0,
        retention: timedelta = timedelta(days=7),
        max_in_flight: int = 3,
    ) -> None:
        self.database = database
        self.broker = broker
        self.topology = topology
        self.service = service
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.linger_seconds = linger_seconds
        self.publish_timeout_seconds = publish_timeout_seconds
        self.retry_max_seconds = retry_max_seconds
        self.retention = retention
        # Without row locks (SQLite) two batches out at once would claim the same rows.
        self.max_in_flight = max_in_flight if database.backend == "postgresql" else 1
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] = lambda: None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()  # batches side by side open one channel
        self._gauges_at = 0.0
        self._purged_at = time.monotonic()

    def notify(self) -> None:
        """Publish now rather than at the next poll (after a commit that staged events)."""
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is None:
            self._unsubscribe = on_outbox_commit(self.database.engine, self.notify)
            self._task = asyncio.create_task(self.run(), name=f"outbox-relay-{self.service}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._unsubscribe()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._channel = self._exchange = None

    async def run(self) -> None:
        """Publish forever (until cancelled); the broker being down only delays."""
        # Its own polling SQL is no trace; each event it publishes is a span of the trace
        # that wrote it.
        with untraced():
            await self._run()

    async def _run(self) -> None:
        batches: set[asyncio.Task[int]] = set()
        try:
            await self._dispatch(batches)
        finally:
            # Stopped: a batch cut short rolls back, and its rows go out after a restart.
            for batch in batches:
                batch.cancel()
            await asyncio.gather(*batches, return_exceptions=True)

    async def _dispatch(self, batches: set[asyncio.Task[int]]) -> None:
        delay = min(self.poll_seconds, self.retry_max_seconds)
        start = True
        while True:
            if start and len(batches) < self.max_in_flight:
                if self.linger_seconds and not batches and self._wakeup.is_set():
                    # A commit woke it with nothing out: the events the next commits
                    # stage meanwhile go out in the same batch.
                    await asyncio.sleep(self.linger_seconds)
                self._wakeup.clear()
                batches.add(asyncio.create_task(self.publish_pending()))
            start, failure = await self._next_event(batches)
            if failure is not None:
                # Let the others end before pausing: they may have been confirmed.
                await asyncio.gather(*batches, return_exceptions=True)
                batches.clear()
                _log_pass_failure(failure, delay)
                await self._refresh_gauges()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                start = True
                continue
            delay = min(self.poll_seconds, self.retry_max_seconds)
            await self._refresh_gauges()
            await self._purge_published()

    async def _next_event(
        self, batches: set[asyncio.Task[int]]
    ) -> tuple[bool, BaseException | None]:
        """Wait for a batch to end, a commit (while a batch may start) or the poll
        interval. Returns whether to start a batch, and why a batch failed if one did."""
        woken = asyncio.ensure_future(self._wakeup.wait())
        waiting: set[asyncio.Future[Any]] = {*batches}
        if len(batches) < self.max_in_flight:
            waiting.add(woken)
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            woken.cancel()
        # A poll interval with nothing happening, a commit, or a full batch (more rows
        # may be waiting behind it): start one.
        start = not done or woken in done
        failure: BaseException | None = None
        for batch in done - {woken}:
            batches.discard(batch)
            if (error := batch.exception()) is not None:
                failure = error
            elif batch.result() >= self.batch_size:
                start = True
        return start, failure

    async def publish_pending(self) -> int:
        """Publish one batch of due rows; returns how many the broker confirmed.

        Raises `BrokerUnavailable` when the broker cannot be reached (after marking
        whatever was confirmed before that)."""
        async with self.database.sessionmaker() as session:
            rows = await self._claim(session)
            if not rows:
                await session.rollback()
                return 0
            exchange = await self._get_exchange()
            if self.database.backend != "postgresql":
                # SQLite: end the read snapshot before publishing, or the later write
                # would fail whenever a producer committed in between.
                await session.commit()
            confirmed, failures, unavailable = await self._publish(exchange, rows)
            await self._record(session, confirmed, failures)
            await session.commit()
        for row in rows:
            if row.id in confirmed:
                EVENTS_PUBLISHED.labels(row.type).inc()
        if unavailable is not None:
            await self._drop_channel()
            raise BrokerUnavailable(unavailable)
        return len(confirmed)

    async def _get_exchange(self) -> AbstractExchange:
        connection = self.broker.connection_now()
        async with self._opening:
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                try:
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._exchange = await declare_exchange(connection, channel, self.topology)
                except Exception as error:
                    raise BrokerUnavailable(f"cannot open a channel: {error!r}") from error
                self._channel = channel
            return self._exchange

    async def _drop_channel(self) -> None:
        """Forget the channel after a failure (the next pass opens a fresh one)."""
        channel, self._channel, self._exchange = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await channel.close()

    async def _claim(self, session: AsyncSession) -> Sequence[Any]:
        values = {"claim_now": utcnow(), "claim_limit": self.batch_size}
        return (await session.execute(_CLAIM, values)).all()

    def _message(self, row: Any, span: Span | None) -> aio_pika.Message:
        traceparent = message_traceparent(span, row.traceparent)
        return aio_pika.Message(
            row.payload.encode(),
            message_id=str(row.id),
            content_type="application/json",
            type=row.type,
            timestamp=row.occurred_at,
            app_id=self.service,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"traceparent": traceparent} if traceparent else None,
        )

    async def _publish(
        self, exchange: AbstractExchange, rows: Sequence[Any]
    ) -> tuple[set[uuid.UUID], list[_Failure], str | None]:
        """Publish every row at once and wait for all the confirms together (one round
        trip per batch, not per message). Returns the confirmed ids, the rows the broker
        turned down, and why the broker was unreachable (None if it was not)."""
        spans = [
            publish_span(row.type, str(row.id), self.topology.exchange, row.traceparent)
            for row in rows
        ]
        tasks = [
            asyncio.ensure_future(
                exchange.publish(self._message(row, span), routing_key=row.type, mandatory=True)
            )
            for row, span in zip(rows, spans, strict=True)
        ]
        _, late = await asyncio.wait(tasks, timeout=self.publish_timeout_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        confirmed: set[uuid.UUID] = set()
        failures: list[_Failure] = []
        unavailable: str | None = None
        for row, task in zip(rows, tasks, strict=True):
            error = None if task.cancelled() else task.exception()
            if task.cancelled():
                unavailable = unavailable or "no confirm within the publish timeout"
            elif error is None and isinstance(task.result(), aiormq.spec.Basic.Ack):
                confirmed.add(row.id)
            elif isinstance(error, aio_pika.exceptions.PublishError):
                # Basic.Return although the exchange has an alternate one: that exchange is
                # missing (a topology fault). The row stays pending and is tried again.
                failures.append(_Failure(row.id, row.attempts, "unroutable", str(error)))
            elif isinstance(error, aio_pika.exceptions.DeliveryError):
                failures.append(_Failure(row.id, row.attempts, "refused", str(error)))
            else:
                unavailable = unavailable or repr(error or task.result())
        _end_spans(rows, spans, confirmed)
        for failure in failures:
            EVENT_PUBLISH_FAILURES.labels(failure.reason).inc()
        if unavailable is not None:
            EVENT_PUBLISH_FAILURES.labels("broker_unavailable").inc(
                len(rows) - len(confirmed) - len(failures)
            )
        if failures:
            _log_failures(failures, self.topology)
        return confirmed, failures, unavailable

    async def _record(
        self, session: AsyncSession, confirmed: set[uuid.UUID], failures: list[_Failure]
    ) -> None:
        now = utcnow()
        if confirmed:
            await session.execute(_MARK_PUBLISHED, {"mark_ids": list(confirmed), "mark_now": now})
        if failures:
            await session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == bindparam("row_id"))
                .values(
                    attempts=bindparam("new_attempts"),
                    last_error=bindparam("error"),
                    next_attempt_at=bindparam("retry_at"),
                ),
                [
                    {
                        "row_id": failure.row_id,
                        "new_attempts": failure.attempts + 1,
                        "error": f"{failure.reason}: {failure.error}"[:1000],
                        "retry_at": now + timedelta(seconds=self._row_delay(failure.attempts)),
                    }
                    for failure in failures
                ],
            )

    def _row_delay(self, attempts_before: int) -> float:
        return float(min(ROW_RETRY_SECONDS * 2 ** min(attempts_before, 20), self.retry_max_seconds))

    async def _refresh_gauges(self) -> None:
        if time.monotonic() - self._gauges_at < GAUGE_SECONDS:
            return
        self._gauges_at = time.monotonic()
        try:
            pending, oldest = await self.backlog()
        except Exception:
            logger.warning("the outbox backlog could not be read", exc_info=True)
            return
        OUTBOX_BACKLOG.labels(self.service).set(pending)
        age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        OUTBOX_OLDEST_PENDING_AGE.labels(self.service).set(age)

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many rows are not published yet, and when the oldest of them occurred."""
        async with self.database.sessionmaker() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(OUTBOX.c.occurred_at)).where(
                        OUTBOX.c.published_at.is_(None)
                    )
                )
            ).one()
        return int(count), oldest

    async def _purge_published(self) -> None:
        """Forget rows published longer ago than the retention (kept that long to look
        into what was sent)."""
        if time.monotonic() - self._purged_at < PURGE_SECONDS:
            return
        self._purged_at = time.monotonic()
        try:
            async with self.database.sessionmaker() as session:
                await session.execute(
                    delete(OUTBOX).where(OUTBOX.c.published_at < utcnow() - self.retention)
                )
                await session.commit()
        except Exception:
            logger.warning("published outbox rows could not be purged", exc_info=True)


# The relay's statements for each batch, built once and run with each pass's values
# (building and keying them for the compiled cache cost more CPU than running them).

#: Due rows, oldest first, locked (rows another relay holds are skipped, not waited for).
_CLAIM = (
    select(
        OUTBOX.c.id,
        OUTBOX.c.type,
        OUTBOX.c.payload,
        OUTBOX.c.occurred_at,
        OUTBOX.c.traceparent,
        OUTBOX.c.attempts,
    )
    .where(
        OUTBOX.c.published_at.is_(None),
        (OUTBOX.c.next_attempt_at.is_(None))
        | (OUTBOX.c.next_attempt_at <= bindparam("claim_now", type_=OUTBOX.c.occurred_at.type)),
    )
    .order_by(OUTBOX.c.occurred_at, OUTBOX.c.id)
    .limit(bindparam("claim_limit"))
    .with_for_update(skip_locked=True)
)
#: The rows the broker confirmed.
_MARK_PUBLISHED = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(bindparam("mark_ids", expanding=True)))
    .values(published_at=bindparam("mark_now", type_=OUTBOX.c.published_at.type))
)


def _log_pass_failure(error: BaseException, delay: float) -> None:
    if isinstance(error, BrokerUnavailable):
        logger.warning(
            "events wait for RabbitMQ",
            extra={"error": str(error), "retry_in_seconds": round(delay, 2)},
        )
    else:
        logger.error("the outbox relay failed; trying again", exc_info=error)


def _log_failures(failures: list[_Failure], topology: Topology) -> None:
    extra = {
        "count": len(failures),
        "reasons": sorted({failure.reason for failure in failures}),
        "first_error": failures[0].error,
    }
    if any(failure.reason == "unroutable" for failure in failures):
        # Whatever no queue takes goes to the alternate exchange; a return means that
        # exchange is gone, which no deployment should see.
        logger.error(
            "topology fault: events came back unroutable; they stay pending",
            extra={**extra, "alternate_exchange": topology.unroutable_exchange},
        )
    else:
        logger.warning("events were not accepted by the broker; they stay pending", extra=extra)


def _end_spans(rows: Sequence[Any], spans: list[Span | None], confirmed: set[uuid.UUID]) -> None:
    for row, span in zip(rows, spans, strict=True):
        if span is None:
            continue
        if row.id not in confirmed:
            span.set_status(Status(StatusCode.ERROR, "not confirmed by the broker"))
        span.end()
