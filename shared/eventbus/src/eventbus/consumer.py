"""The event consumer: a service's own queue, handlers per event type, and an inbox that
makes each event id take effect once.

    # events.py of a consuming service
    handlers = EventHandlers()

    @handlers.on(PRODUCT_CREATED)
    async def create_stock_record(session: AsyncSession, event: EventEnvelope) -> None:
        ...  # SQL only, no commit: the consumer commits, with the inbox row

    # models.py
    inbox_event = inbox_table(Base.metadata)

For each message: the envelope is parsed (a message that is not one goes to the
dead-letter queue at once); the event id is inserted into `inbox_event` and the handler
runs in the same transaction; after the commit the message is acknowledged. An id
already in the inbox (a redelivery, a duplicate publish) is acknowledged without
running anything. A handler that raises rolls everything back and the message is handed
back after a pause; after `MAX_DELIVERIES` tries it goes to the dead-letter queue
(`python -m eventbus.dlq` lists and replays those). While the database does not
answer at all, events wait in place instead of spending their tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from sqlalchemy import Column, Index, MetaData, String, Table, Uuid, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from eventbus.broker import MAX_DELIVERIES, Broker, Topology, declare_service_queues
from eventbus.envelope import EventEnvelope
from eventbus.metrics import (
    EVENT_HANDLING_SECONDS,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTER_DEPTH,
    EVENTS_DEAD_LETTERED,
    EVENTS_QUEUE_DEPTH,
)
from shared.db import NAMING_CONVENTION, Database, UTCDateTime, utcnow
from shared.tracing import consume_span, untraced

logger = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, EventEnvelope], Awaitable[None]]

#: Longest pause before a failed event is handed back.
MAX_RETRY_DELAY_SECONDS = 30.0
INBOX_PURGE_SECONDS = 3600.0
#: How often the queue-depth gauges are refreshed.
QUEUE_DEPTH_SECONDS = 5.0
DATABASE_PING_SECONDS = 2.0

_metadata = MetaData(naming_convention=NAMING_CONVENTION)

INBOX = Table(
    "inbox_event",
    _metadata,
    Column("event_id", Uuid(), primary_key=True),
    Column("type", String(100), nullable=False),
    Column("processed_at", UTCDateTime(), nullable=False),
    Index("ix_inbox_event_processed_at", "processed_at"),
)


def inbox_table(metadata: MetaData) -> Table:
    """Add the `inbox_event` table to a service's metadata (once) and return it."""
    existing = metadata.tables.get(INBOX.name)
    return existing if existing is not None else INBOX.to_metadata(metadata)


class EventHandlers:
    """What a service does with the events it consumes: one handler per event type.

    The queue is bound to exactly these types."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for type_ in types:
                if type_ in self._handlers:
                    raise ValueError(f"{type_} already has a handler")
                self._handlers[type_] = handler
            return handler

        return register

    def get(self, type_: str) -> Handler | None:
        return self._handlers.get(type_)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))


async def record_in_inbox(session: AsyncSession, envelope: EventEnvelope) -> bool:
    """Insert the event id into the inbox; False when it is there already. On
    PostgreSQL a concurrent insert of the same id waits for the other transaction and
    then finds the id taken."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(INBOX)
        .values(event_id=envelope.id, type=envelope.type, processed_at=utcnow())
        .on_conflict_do_nothing(index_elements=[INBOX.c.event_id])
        .returning(INBOX.c.event_id)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How often the broker delivered this message before (quorum queues count it)."""
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int):
        return count
    return 1 if message.redelivered else 0


class EventConsumer:
    """Consumes one service's queue; `start()` in the lifespan, `stop()` at the end.

    `start()` returns at once; the queue is declared and consumed as soon as the broker
    is reached. aio-pika's robust connection restores the consumer after a reconnect."""

    def __init__(
        self,
        database: Database,
        broker: Broker,
        topology: Topology,
        handlers: EventHandlers,
        *,
        service: str,
        prefetch: int = 32,
        retry_delay_seconds: float = 0.5,
        inbox_retention: timedelta = timedelta(days=30),
    ) -> None:
        if not handlers.types:
            raise ValueError("a consumer needs at least one handler")
        self.database = database
        self.broker = broker
        self.topology = topology
        self.handlers = handlers
        self.service = service
        self.prefetch = prefetch
        self.retry_delay_seconds = retry_delay_seconds
        self.inbox_retention = inbox_retention
        #: Set once the queue is declared and consumed (the robust connection restores
        #: that after a reconnect by itself).
        self.consuming = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._handling: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"event-consumer-{self.service}")

    async def stop(self, *, drain_seconds: float = 5.0) -> None:
        """Stop taking messages, let the ones being handled finish (up to
        `drain_seconds`), and close the channel; unacknowledged messages go back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(drain_seconds):
                    await self._queue.cancel(self._consumer_tag)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                await self._idle.wait()
        # Still running (a handler waiting for the database): given up, not acknowledged,
        # so the broker hands the messages out again.
        for task in tuple(self._handling):
            task.cancel()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._channel = self._queue = self._consumer_tag = None
        self.consuming.clear()

    async def _run(self) -> None:
        connection = await self.broker.connection()
        delay = 1.0
        while True:
            try:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=self.prefetch)
                queue, _ = await declare_service_queues(
                    connection, channel, self.topology, self.service, self.handlers.types
                )
                self._consumer_tag = await queue.consume(self._on_message)
            except Exception:
                logger.exception(
                    "the event queue could not be set up; trying again",
                    extra={"queue": self.topology.queue(self.service), "retry_in_seconds": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._channel, self._queue = channel, queue
            self.consuming.set()
            logger.info(
                "consuming events",
                extra={"queue": queue.name, "types": list(self.handlers.types)},
            )
            break
        purge_at = time.monotonic() + INBOX_PURGE_SECONDS
        while True:
            with untraced():
                await self._refresh_queue_depths(channel)
                if time.monotonic() >= purge_at:
                    await self._purge_inbox()
                    purge_at = time.monotonic() + INBOX_PURGE_SECONDS
            await asyncio.sleep(QUEUE_DEPTH_SECONDS)

    async def _refresh_queue_depths(self, channel: AbstractChannel) -> None:
        """The lag and dead-letter gauges, from a passive declare of each queue (not
        recorded for restoring: it only asks)."""
        try:
            for name, gauge in (
                (self.topology.queue(self.service), EVENTS_QUEUE_DEPTH),
                (self.topology.dead_letter_queue(self.service), EVENTS_DEAD_LETTER_DEPTH),
            ):
                async with asyncio.timeout(QUEUE_DEPTH_SECONDS):
                    queue = await channel.declare_queue(name, passive=True, robust=False)  # type: ignore[call-arg]
                result = queue.declaration_result
                gauge.labels(self.service).set(result.message_count or 0)
        except Exception as error:
            # The broker is away (the connection recovers by itself): keep the last
            # figures rather than report an empty queue.
            logger.debug("queue depths unavailable", extra={"error": repr(error)})

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
        self._idle.clear()
        try:
            await self._handle_message(message)
        finally:
            if task is not None:
                self._handling.discard(task)
            if not self._handling:
                self._idle.set()

    async def _handle_message(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = EventEnvelope.model_validate_json(message.body)
        except ValidationError as error:
            logger.error(
                "a message that is not an event was dead-lettered",
                extra={
                    "message_id": message.message_id,
                    "routing_key": message.routing_key,
                    "error": str(error)[:500],
                },
            )
            EVENTS_DEAD_LETTERED.labels("unparseable").inc()
            EVENTS_CONSUMED.labels("unknown", "dead_lettered").inc()
            await self._settle(message.reject(requeue=False), message)
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            # Only a stale binding routes such a message here: nothing is owed to it.
            EVENTS_CONSUMED.labels(envelope.type, "unhandled").inc()
            await self._settle(message.ack(), message)
            return

        queue = self.topology.queue(self.service)
        traceparent = _header(message, "traceparent")
        with consume_span(envelope.type, message.message_id, queue, traceparent):
            await self._handle_event(message, envelope, handler)

    async def _handle_event(
        self, message: AbstractIncomingMessage, envelope: EventEnvelope, handler: Handler
    ) -> None:
        context = {"event_id": str(envelope.id), "event_type": envelope.type}
        started = time.perf_counter()
        try:
            processed = await self._process_while_the_database_is_down(envelope, handler)
        except Exception:
            attempt = delivery_count(message) + 1
            if attempt >= MAX_DELIVERIES:
                logger.exception(
                    "an event failed on every try and was dead-lettered",
                    extra={**context, "attempt": attempt},
                )
                EVENTS_DEAD_LETTERED.labels("failed").inc()
                EVENTS_CONSUMED.labels(envelope.type, "dead_lettered").inc()
                await self._settle(message.reject(requeue=False), message)
            else:
                delay = min(self.retry_delay_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)
                logger.warning(
                    "an event failed; it will be tried again",
                    exc_info=True,
                    extra={**context, "attempt": attempt, "retry_in_seconds": delay},
                )
                EVENTS_CONSUMED.labels(envelope.type, "retried").inc()
                await asyncio.sleep(delay)
                await self._settle(message.nack(requeue=True), message)
            return
        finally:
            EVENT_HANDLING_SECONDS.labels(envelope.type).observe(time.perf_counter() - started)
        EVENTS_CONSUMED.labels(envelope.type, "processed" if processed else "duplicate").inc()
        await self._settle(message.ack(), message)

    async def _process_while_the_database_is_down(
        self, envelope: EventEnvelope, handler: Handler
    ) -> bool:
        """`process`, tried again in place for as long as the database does not answer:
        an outage is not the event's fault, so it spends none of the event's tries (which
        would send every event in flight to the dead-letter queue within seconds)."""
        delay = max(self.retry_delay_seconds, 0.1)
        while True:
            try:
                return await self.process(envelope, handler)
            except Exception:
                if await self._database_answers():
                    raise
                logger.warning(
                    "the database does not answer; the event waits for it",
                    extra={"event_id": str(envelope.id), "retry_in_seconds": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(DATABASE_PING_SECONDS):
                await self.database.ping()
        except Exception:
            return False
        return True

    async def process(self, envelope: EventEnvelope, handler: Handler | None = None) -> bool:
        """Record the event in the inbox and run its handler, in one transaction;
        False (and nothing run) when the inbox already had it."""
        handler = handler or self.handlers.get(envelope.type)
        if handler is None:
            raise LookupError(f"no handler for {envelope.type}")
        async with self.database.sessionmaker() as session:
            if not await record_in_inbox(session, envelope):
                await session.rollback()
                return False
            await handler(session, envelope)
            await session.commit()
        return True

    async def _settle(self, settling: Awaitable[object], message: AbstractIncomingMessage) -> None:
        """Acknowledge, hand back or reject. When that fails the channel is gone: the
        broker hands the message out again, and the inbox recognises it."""
        try:
            await settling
        except Exception as error:
            logger.info(
                "a message could not be settled; it will be delivered again",
                extra={"message_id": message.message_id, "error": repr(error)},
            )

    async def _purge_inbox(self) -> None:
        """Forget ids processed longer ago than the retention (no duplicate comes that late)."""
        try:
            async with self.database.sessionmaker() as session:
                await session.execute(
                    delete(INBOX).where(INBOX.c.processed_at < utcnow() - self.inbox_retention)
                )
                await session.commit()
        except Exception:
            logger.warning("old inbox rows could not be purged", exc_info=True)


def _header(message: AbstractIncomingMessage, name: str) -> str | None:
    value = (message.headers or {}).get(name)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None
