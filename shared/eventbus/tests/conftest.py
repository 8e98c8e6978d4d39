"""Fixtures of the events library's tests: a database with an outbox, an inbox and a table
the test handlers write to (SQLite and PostgreSQL), a real RabbitMQ with names of the
test's own, and a small harness around relays and consumers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, insert, select

from eventbus import (
    Broker,
    EventConsumer,
    EventEnvelope,
    EventHandlers,
    OutboxRelay,
    Topology,
    add_event,
    inbox_table,
    outbox_table,
)
from eventbus.outbox import OUTBOX
from service_testing import (
    RABBITMQ_URL,
    RabbitMQNode,
    delete_topology,
    postgres_database,
    unique_topology,
)
from shared.db import NAMING_CONVENTION, Database

SERVICE = "listener"
SOURCE = "test_service"

metadata = MetaData(naming_convention=NAMING_CONVENTION)
outbox_table(metadata)
inbox_table(metadata)
#: What the test handlers do: one row per run (no unique key, so a second run shows).
effect = Table(
    "effect",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Uuid, nullable=False),
    Column("note", String(100), nullable=False),
)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("events") / "events.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        async with postgres_database("events") as url:
            await _create_tables(url)
            yield url
        return
    await _create_tables(url)
    yield url


async def _create_tables(url: str) -> None:
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    finally:
        await database.dispose()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=5, max_overflow=20)
    try:
        yield database
    finally:
        async with database.engine.begin() as connection:
            for table in reversed(metadata.sorted_tables):
                await connection.execute(table.delete())
        await database.dispose()


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    names = unique_topology("events")
    yield names
    await delete_topology(names, (SERVICE,))


@contextlib.asynccontextmanager
async def connected_broker(url: str) -> AsyncIterator[Broker]:
    broker = Broker(url, name="events-test", reconnect_seconds=0.2)
    await broker.start()
    try:
        async with asyncio.timeout(10):
            await broker.connection()
        yield broker
    finally:
        # Closed when the broker never answered too: a connecting task left pending
        # is destroyed with the test's loop, and pytest turns that into an internal error.
        await broker.close()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with connected_broker(RABBITMQ_URL) as broker:
        yield broker


class Harness:
    """Stages events, runs relays and consumers, and counts what the handlers did."""

    def __init__(self, database: Database, broker: Broker, topology: Topology) -> None:
        self.database = database
        self.broker = broker
        self.topology = topology
        self.handlers = EventHandlers()
        self.fail_notes: set[str] = set()
        self.seen_traceparents: list[str | None] = []
        self.handler_calls = 0
        #: Handler runs per event note (a batch run again runs its good events again).
        self.calls_by_note: collections.Counter[str] = collections.Counter()
        self._running: list[OutboxRelay | EventConsumer] = []

        async def record_effect(session: Any, event: EventEnvelope) -> None:
            from shared.tracing import traceparent_var

            self.handler_calls += 1
            self.seen_traceparents.append(traceparent_var.get())
            note = str(event.data.get("note", ""))
            self.calls_by_note[note] += 1
            if note in self.fail_notes:
                raise RuntimeError(f"handler refuses {note!r}")
            await session.execute(insert(effect).values(event_id=event.id, note=note))

        self.handlers.on("thing.happened", "thing.changed")(record_effect)
        # As if it also sent something its transaction cannot take back (an e-mail).
        self.handlers.on("thing.sent", external_effects=True)(record_effect)

    async def stage(self, note: str, type_: str = "thing.happened") -> EventEnvelope:
        """Commit one outbox row, as a producer's business transaction would."""
        async with self.database.sessionmaker() as session:
            envelope = await add_event(session, type_, {"note": note}, SOURCE)
            await session.commit()
        return envelope

    def relay(self, **options: Any) -> OutboxRelay:
        options.setdefault("poll_seconds", 0.05)
        options.setdefault("retry_max_seconds", 1.0)
        return OutboxRelay(self.database, self.broker, self.topology, service=SOURCE, **options)

    def consumer(self, **options: Any) -> EventConsumer:
        options.setdefault("retry_delay_seconds", 0.01)
        return EventConsumer(
            self.database, self.broker, self.topology, self.handlers, service=SERVICE, **options
        )

    async def start(self, component: OutboxRelay | EventConsumer) -> Any:
        await component.start()
        self._running.append(component)
        if isinstance(component, EventConsumer):
            async with asyncio.timeout(10):
                await component.consuming.wait()
        return component

    async def stop_all(self) -> None:
        for component in reversed(self._running):
            await component.stop()
        self._running.clear()

    async def effects(self, note: str | None = None) -> int:
        async with self.database.sessionmaker() as session:
            statement = select(func.count()).select_from(effect)
            if note is not None:
                statement = statement.where(effect.c.note == note)
            return int(await session.scalar(statement) or 0)

    async def outbox_rows(self) -> list[Any]:
        async with self.database.sessionmaker() as session:
            return list(
                (await session.execute(select(OUTBOX).order_by(OUTBOX.c.occurred_at))).all()
            )

    async def effects_are(self, expected: int) -> bool:
        return await self.effects() == expected

    async def pending_is(self, expected: int) -> bool:
        return await self.pending() == expected

    async def pending(self) -> int:
        async with self.database.sessionmaker() as session:
            statement = select(func.count()).where(OUTBOX.c.published_at.is_(None))
            return int(await session.scalar(statement) or 0)

    async def publish_raw(
        self, body: bytes, routing_key: str = "thing.happened", **properties: Any
    ) -> None:
        """Put a message on the exchange directly, as a misbehaving producer might."""
        connection = await self.broker.connection()
        async with connection.channel() as channel:
            exchange = await channel.get_exchange(self.topology.exchange)
            await exchange.publish(
                aio_pika.Message(body, content_type="application/json", **properties),
                routing_key=routing_key,
            )

    async def dead_letters_are(self, expected: int) -> bool:
        return await self.dead_letters() == expected

    async def dead_letters(self) -> int:
        connection = await self.broker.connection()
        async with connection.channel() as channel:
            queue = await channel.declare_queue(
                self.topology.dead_letter_queue(SERVICE), passive=True
            )
            return queue.declaration_result.message_count or 0


@contextlib.asynccontextmanager
async def running_harness(
    database: Database, broker: Broker, topology: Topology
) -> AsyncIterator[Harness]:
    harness = Harness(database, broker, topology)
    try:
        yield harness
    finally:
        with contextlib.suppress(Exception):
            await harness.stop_all()


@pytest.fixture
async def harness(database: Database, broker: Broker, topology: Topology) -> AsyncIterator[Harness]:
    async with running_harness(database, broker, topology) as harness:
        yield harness


@pytest.fixture
async def harness_on_own_node(
    database: Database, topology: Topology, rabbitmq_node: RabbitMQNode
) -> AsyncIterator[Harness]:
    """A harness on the test run's own RabbitMQ node, for the tests that stop the broker
    (the machine's shared one serves other runs at the same moment)."""
    async with (
        connected_broker(rabbitmq_node.url) as broker,
        running_harness(database, broker, topology) as harness,
    ):
        yield harness
