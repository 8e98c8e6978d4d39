"""The event consumer: a service's own queue, handlers per event type, and an inbox that
makes each event id take effect once.

    # events.py of a consuming service
    handlers = EventHandlers()

    @handlers.on(PRODUCT_CREATED)
    async def create_stock_record(session: AsyncSession, event: EventEnvelope) -> None:
        ...  # SQL only, no commit: the consumer commits, with the inbox row

    # models.py
    inbox_event = inbox_table(Base.metadata)

Messages are handled in batches: whatever has arrived when a worker is free, up to
`batch_size`, in one transaction (one inbox statement and one commit for the batch,
instead of a transaction per event); a quiet queue makes batches of one, so nothing
waits for a batch to fill. Each message's envelope is parsed (a message that is not one
goes to the dead-letter queue at once); the event ids are inserted into `inbox_event`
and each new event's handler runs in the batch's transaction; after the commit the
messages are acknowledged. An id already in the inbox (a redelivery, a duplicate
publish) is acknowledged without running anything. A handler that raises takes only its
own changes (and its inbox row) back, not the others': its message is handed back after
a pause, and after `MAX_DELIVERIES` tries it goes to the dead-letter queue (`python -m
eventbus.dlq` lists and replays those). A batch whose commit fails is handled again
event by event. While the database does not answer at all, events wait in place
instead of spending their tries.

Savepoints are what keep a failed handler's changes apart, and each costs two round
trips (a fifth of the checkout's statements went to them). A handler whose every effect
is in the transaction can simply run again, so a batch of those runs without them: when
one raises, the batch is rolled back and run again with a savepoint per handler. A
handler registered with `external_effects` (it sends an e-mail) must not run again
because a neighbour failed, so every handler after it in its batch gets a savepoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError
from sqlalchemy import Column, Index, MetaData, String, Table, Uuid, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from eventbus.broker import (
    MAX_DELIVERIES,
    Broker,
    Topology,
    cancelling,
    declare_service_queues,
)
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

    The queue is bound to exactly these types, and unbound from the `retired` ones."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._external: set[str] = set()
        self._retired: set[str] = set()

    def on(self, *types: str, external_effects: bool = False) -> Callable[[Handler], Handler]:
        """Register the handler of `types`; `external_effects`: it does something its
        transaction cannot take back (sends an e-mail), so it is never run again because
        another event of its batch failed."""

        def register(handler: Handler) -> Handler:
            for type_ in types:
                if type_ in self._handlers:
                    raise ValueError(f"{type_} already has a handler")
                self._handlers[type_] = handler
                if external_effects:
                    self._external.add(type_)
            return handler

        return register

    def retire(self, *types: str) -> None:
        """Types an earlier version of the service consumed and this one does not: the
        broker keeps a queue's bindings, so they are removed where the queue is
        declared, and an upgraded service stops being sent what it would only drop."""
        self._retired.update(types)

    def get(self, type_: str) -> Handler | None:
        return self._handlers.get(type_)

    def has_external_effects(self, type_: str) -> bool:
        return type_ in self._external

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    @property
    def retired(self) -> tuple[str, ...]:
        return tuple(sorted(self._retired - self._handlers.keys()))


async def record_in_inbox(
    session: AsyncSession, envelopes: Sequence[EventEnvelope]
) -> set[uuid.UUID]:
    """Insert the events' ids into the inbox (one statement); returns the ids that were
    not there yet. On PostgreSQL a concurrent insert of the same id waits for the other
    transaction and then finds the id taken."""
    rows = {envelope.id: envelope.type for envelope in envelopes}
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    statement = (
        insert(INBOX)
        .values(
            # In id order: two batches sharing ids then take their locks in one order.
            [
                {"event_id": event_id, "type": type_, "processed_at": now}
                for event_id, type_ in sorted(rows.items())
            ]
        )
        .on_conflict_do_nothing(index_elements=[INBOX.c.event_id])
        .returning(INBOX.c.event_id)
    )
    return set((await session.execute(statement)).scalars())


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How often the broker delivered this message before (quorum queues count it)."""
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int):
        return count
    return 1 if message.redelivered else 0


@dataclass(frozen=True, slots=True)
class _Event:
    """An event to process, with its handler and what its message said of its trace."""

    envelope: EventEnvelope
    handler: Handler
    message_id: str | None = None
    traceparent: str | None = None
    #: The handler does something its transaction cannot take back.
    external_effects: bool = False


class DatabaseDown(RuntimeError):
    """A handler failed while the database did not answer: the batch waits in place."""


#: What processing did with an event: True processed, False duplicate, or why it failed.
Outcome = bool | Exception


class EventConsumer:
    """Consumes one service's queue; `start()` in the lifespan, `stop()` at the end.

    `start()` returns at once; the queue is declared and consumed as soon as the broker
    is reached. aio-pika's robust connection restores the consumer after a reconnect.
    `prefetch` messages are in flight at most; `prefetch // batch_size` batches are
    handled at once (while one commits, the next one runs). A batch is open for
    `linger_seconds` after its first message: what arrives meanwhile shares its
    transaction, where a lone event would cost a BEGIN, an inbox INSERT and a COMMIT of
    its own."""

    def __init__(
        self,
        database: Database,
        broker: Broker,
        topology: Topology,
        handlers: EventHandlers,
        *,
        service: str,
        prefetch: int = 64,
        batch_size: int = 32,
        linger_seconds: float = 0.0,
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
        self.batch_size = max(1, min(batch_size, prefetch))
        self.linger_seconds = linger_seconds
        self.retry_delay_seconds = retry_delay_seconds
        self.inbox_retention = inbox_retention
        #: Set once the queue is declared and consumed (the robust connection restores
        #: that after a reconnect by itself).
        self.consuming = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Set by stop(): what `_run` checks besides its cancellation, which aio-pika may
        #: swallow (a cancel that lands in a channel's opening came back as an error).
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        #: Delivered, not handled yet (the workers take batches from here).
        self._arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        #: Held by the worker whose batch is open: the next one starts after it closes,
        #: so the messages of a moment are not dealt out between the workers.
        self._collecting = asyncio.Lock()
        #: Failed messages waiting for their pause before they are handed back.
        self._handing_back: set[asyncio.Task[None]] = set()
        self._unsettled = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"event-consumer-{self.service}")
            self._workers = [
                asyncio.create_task(self._work(), name=f"event-worker-{self.service}-{n}")
                for n in range(max(1, self.prefetch // self.batch_size))
            ]

    async def stop(self, *, drain_seconds: float = 5.0) -> None:
        """Stop taking messages, let the ones delivered finish (up to `drain_seconds`),
        and close the channel; unacknowledged messages go back."""
        if self._task is not None:
            self._stopping.set()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if cancelling():  # stop() itself was cancelled, not only the task
                    raise
            self._task = None
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(drain_seconds):
                    await self._queue.cancel(self._consumer_tag)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                await self._idle.wait()
        # Still running (a handler waiting for the database, a failed event's pause):
        # given up, not acknowledged, so the broker hands the messages out again.
        for task in (*self._workers, *self._handing_back):
            task.cancel()
        await asyncio.gather(*self._workers, *self._handing_back, return_exceptions=True)
        self._workers.clear()
        self._handing_back.clear()
        self._arrived = asyncio.Queue()
        self._collecting = asyncio.Lock()
        self._unsettled = 0
        self._idle.set()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._channel = self._queue = self._consumer_tag = None
        self.consuming.clear()

    async def _run(self) -> None:
        connection = await self.broker.connection()
        channel = await self._consume(connection)
        if channel is None:
            return
        purge_at = time.monotonic() + INBOX_PURGE_SECONDS
        while not self._stopping.is_set():
            with untraced():
                await self._refresh_queue_depths(channel)
                if time.monotonic() >= purge_at:
                    await self._purge_inbox()
                    purge_at = time.monotonic() + INBOX_PURGE_SECONDS
            await self._pause(QUEUE_DEPTH_SECONDS)

    async def _consume(self, connection: AbstractRobustConnection) -> AbstractChannel | None:
        """Declare the queue and start consuming it, trying again until it works; the
        channel, or None when the consumer stops first."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=self.prefetch)
                queue, _ = await declare_service_queues(
                    connection,
                    channel,
                    self.topology,
                    self.service,
                    self.handlers.types,
                    retired=self.handlers.retired,
                )
                self._consumer_tag = await queue.consume(self._on_message)
            except Exception:
                if self._stopping.is_set():
                    break
                logger.exception(
                    "the event queue could not be set up; trying again",
                    extra={"queue": self.topology.queue(self.service), "retry_in_seconds": delay},
                )
                await self._pause(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._channel, self._queue = channel, queue
            self.consuming.set()
            logger.info(
                "consuming events",
                extra={"queue": queue.name, "types": list(self.handlers.types)},
            )
            return channel
        return None

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less when the consumer stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

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
        """aio-pika's callback: the message waits for a worker."""
        self._unsettled += 1
        self._idle.clear()
        self._arrived.put_nowait(message)

    def _settled(self, count: int = 1) -> None:
        self._unsettled -= count
        if self._unsettled <= 0:
            self._unsettled = 0
            self._idle.set()

    async def _work(self) -> None:
        """Take what has arrived (at least one message, at most `batch_size`) and handle
        it as a batch, for ever."""
        while True:
            async with self._collecting:
                batch = await self._collect()
            try:
                await self._handle_batch(batch)
            except Exception:
                # Not settled: the broker hands them out again when the channel goes.
                logger.exception("a batch of events could not be handled")
            finally:
                self._settled(len(batch))

    async def _collect(self) -> list[AbstractIncomingMessage]:
        """The next batch: the first message to arrive and what joins it within
        `linger_seconds`, `batch_size` at most."""
        batch = [await self._arrived.get()]
        closes = asyncio.get_running_loop().time() + self.linger_seconds
        while len(batch) < self.batch_size:
            if not self._arrived.empty():
                batch.append(self._arrived.get_nowait())
                continue
            left = closes - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    batch.append(await self._arrived.get())
            except TimeoutError:
                break
        return batch

    async def _handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        parsed = [(message, event) for message in messages if (event := await self._parse(message))]
        if not parsed:
            return
        events = [event for _, event in parsed]
        started = time.perf_counter()
        try:
            outcomes = await self._process_while_the_database_is_down(events)
        except Exception as error:
            if len(parsed) > 1:
                # The batch's commit failed: each event on its own finds the culprit.
                logger.warning(
                    "a batch of events failed; handling them one by one",
                    extra={"events": len(parsed), "error": repr(error)},
                )
                for message, _ in parsed:
                    await self._handle_batch([message])
                return
            outcomes = [error]
        elapsed = (time.perf_counter() - started) / len(parsed)
        for (message, event), outcome in zip(parsed, outcomes, strict=True):
            EVENT_HANDLING_SECONDS.labels(event.envelope.type).observe(elapsed)
            await self._conclude(message, event.envelope, outcome)

    async def _parse(self, message: AbstractIncomingMessage) -> _Event | None:
        """The message's event and handler; None once a message that is not an event is
        dead-lettered, or one nothing handles is acknowledged."""
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
            return None
        handler = self.handlers.get(envelope.type)
        if handler is None:
            # Only a stale binding routes such a message here: nothing is owed to it.
            EVENTS_CONSUMED.labels(envelope.type, "unhandled").inc()
            await self._settle(message.ack(), message)
            return None
        return _Event(
            envelope,
            handler,
            message.message_id,
            _header(message, "traceparent"),
            self.handlers.has_external_effects(envelope.type),
        )

    async def _conclude(
        self, message: AbstractIncomingMessage, envelope: EventEnvelope, outcome: Outcome
    ) -> None:
        """Acknowledge a processed (or duplicate) event; hand a failed one back after a
        pause, or dead-letter it after its last try."""
        if not isinstance(outcome, Exception):
            EVENTS_CONSUMED.labels(envelope.type, "processed" if outcome else "duplicate").inc()
            await self._settle(message.ack(), message)
            return
        context = {"event_id": str(envelope.id), "event_type": envelope.type}
        attempt = delivery_count(message) + 1
        if attempt >= MAX_DELIVERIES:
            logger.error(
                "an event failed on every try and was dead-lettered",
                exc_info=outcome,
                extra={**context, "attempt": attempt},
            )
            EVENTS_DEAD_LETTERED.labels("failed").inc()
            EVENTS_CONSUMED.labels(envelope.type, "dead_lettered").inc()
            await self._settle(message.reject(requeue=False), message)
            return
        delay = min(self.retry_delay_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)
        logger.warning(
            "an event failed; it will be tried again",
            exc_info=outcome,
            extra={**context, "attempt": attempt, "retry_in_seconds": delay},
        )
        EVENTS_CONSUMED.labels(envelope.type, "retried").inc()
        # The pause is the message's, not the worker's: the batches behind it go on.
        self._unsettled += 1
        task = asyncio.create_task(self._hand_back_later(message, delay))
        self._handing_back.add(task)
        task.add_done_callback(self._handing_back.discard)

    async def _hand_back_later(self, message: AbstractIncomingMessage, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self._settle(message.nack(requeue=True), message)
        finally:
            self._settled()

    async def _process_while_the_database_is_down(self, events: Sequence[_Event]) -> list[Outcome]:
        """`_process`, tried again in place for as long as the database does not answer:
        an outage is not the events' fault, so it spends none of their tries (which would
        send every event in flight to the dead-letter queue within seconds)."""
        delay = max(self.retry_delay_seconds, 0.1)
        while True:
            try:
                return await self._process(events)
            except Exception as error:
                if not isinstance(error, DatabaseDown) and await self._database_answers():
                    raise
                logger.warning(
                    "the database does not answer; the events wait for it",
                    extra={"events": len(events), "retry_in_seconds": delay},
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

    async def _process(self, events: Sequence[_Event]) -> list[Outcome]:
        """Record the events in the inbox and run the new ones' handlers in one
        transaction; a batch whose handler failed before any savepoint was taken is run
        again with a savepoint per handler (see the module)."""
        outcomes = await self._process_once(events, savepoints=False)
        if outcomes is None:
            outcomes = await self._process_once(events, savepoints=True)
            assert outcomes is not None
        return outcomes

    async def _process_once(
        self, events: Sequence[_Event], *, savepoints: bool
    ) -> list[Outcome] | None:
        """One go at `_process`, each handler in a savepoint from the start
        (`savepoints`) or from the one after a handler with external effects; None,
        everything rolled back, when a handler without a savepoint raised."""
        queue = self.topology.queue(self.service)
        alone = len(events) == 1  # a transaction of its own: no savepoint needed
        outcomes: list[Outcome] = []
        async with self.database.sessionmaker() as session:
            # The batch's own statements belong to no event's trace.
            with untraced():
                new = await record_in_inbox(session, [event.envelope for event in events])
            for event in events:
                envelope = event.envelope
                if envelope.id not in new:
                    outcomes.append(False)
                    continue
                new.discard(envelope.id)  # the same id twice in a batch runs once
                savepoint = savepoints and not alone
                with consume_span(envelope.type, event.message_id, queue, event.traceparent):
                    outcome = await self._run_handler(session, event, savepoint=savepoint)
                if isinstance(outcome, Exception) and not (savepoint or alone):
                    # Rolled back, and no handler with external effects has run yet.
                    return None
                outcomes.append(outcome)
                savepoints = savepoints or event.external_effects
            with untraced():
                await session.commit()
        return outcomes

    async def _run_handler(
        self, session: AsyncSession, event: _Event, *, savepoint: bool
    ) -> Outcome:
        """The handler, in a savepoint or not. When it raises (and the database still
        answers: otherwise the batch waits), a savepoint takes back its changes and its
        inbox row and the batch goes on; without one the whole transaction is rolled
        back."""
        try:
            if savepoint:
                async with session.begin_nested():
                    await event.handler(session, event.envelope)
            else:
                await event.handler(session, event.envelope)
        except Exception as error:
            if not await self._database_answers():
                raise DatabaseDown("the database does not answer") from error
            if savepoint:
                await session.execute(delete(INBOX).where(INBOX.c.event_id == event.envelope.id))
            else:
                await session.rollback()
            return error
        return True

    async def process(self, envelope: EventEnvelope, handler: Handler | None = None) -> bool:
        """Record one event in the inbox and run its handler, in one transaction, as a
        batch of one (tests hand events in this way); False (and nothing run) when the
        inbox already had it. Raises what the handler raised."""
        handler = handler or self.handlers.get(envelope.type)
        if handler is None:
            raise LookupError(f"no handler for {envelope.type}")
        event = _Event(
            envelope, handler, external_effects=self.handlers.has_external_effects(envelope.type)
        )
        [outcome] = await self._process([event])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

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
