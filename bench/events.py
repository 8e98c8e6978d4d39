"""Outbox relay throughput: N committed outbox rows -> published and confirmed by RabbitMQ
(into a quorum queue, as a consumer's), on SQLite and PostgreSQL.

    uv run python bench/events.py [--events 10000] [--batch-size 100] [--backend sqlite]

Needs RabbitMQ (scripts/ensure-rabbitmq.sh) and, for postgresql, the test PostgreSQL
(scripts/ensure-postgres.sh). Prints events per second; deletes what it created."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import MetaData, insert

from eventbus import Broker, EventEnvelope, OutboxRelay, outbox_table
from eventbus.broker import declare_service_queues
from eventbus.outbox import OUTBOX
from service_testing import RABBITMQ_URL, delete_topology, postgres_database, unique_topology
from shared.db import Database

CONSUMER = "bench_consumer"


@contextlib.asynccontextmanager
async def database_url(backend: str) -> AsyncIterator[str]:
    if backend == "postgresql":
        async with postgres_database("bench_events") as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"


async def stage(database: Database, count: int) -> None:
    rows = []
    for number in range(count):
        envelope = EventEnvelope.new(
            "bench.happened", {"number": number, "note": "x" * 64}, source="bench"
        )
        rows.append(
            {
                "id": envelope.id,
                "type": envelope.type,
                "payload": envelope.to_json(),
                "occurred_at": envelope.occurred_at,
                "traceparent": f"00-{'1' * 32}-{'2' * 16}-01",
                "attempts": 0,
            }
        )
    async with database.engine.begin() as connection:
        await connection.execute(insert(OUTBOX), rows)


async def run(backend: str, count: int, batch_size: int) -> None:
    topology = unique_topology("bench")
    async with database_url(backend) as url:
        database = Database(url)
        metadata = MetaData()
        outbox_table(metadata)
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        broker = Broker(RABBITMQ_URL, name="bench")
        await broker.start()
        broker_connection = await broker.connection()
        try:
            channel = await broker_connection.channel()
            await declare_service_queues(
                broker_connection, channel, topology, CONSUMER, ("bench.happened",)
            )
            await stage(database, count)
            relay = OutboxRelay(database, broker, topology, service="bench", batch_size=batch_size)
            started = time.perf_counter()
            published = 0
            while batch := await relay.publish_pending():
                published += batch
            elapsed = time.perf_counter() - started
            pending, _ = await relay.backlog()
            await channel.close()
            # A fresh channel: a robust one answers a passive declare from its cache.
            async with broker_connection.channel() as fresh:
                queue = await fresh.declare_queue(topology.queue(CONSUMER), passive=True)
                queued = queue.declaration_result.message_count
            print(
                f"{backend:10} batch {batch_size:4}: {published} events confirmed in "
                f"{elapsed:.2f} s = {published / elapsed:,.0f} events/s "
                f"(left pending: {pending}, in the queue: {queued})"
            )
        finally:
            await broker.close()
            await database.dispose()
            await delete_topology(topology, (CONSUMER,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, action="append")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        for batch_size in args.batch_size or [100, 500]:
            asyncio.run(run(backend, args.events, batch_size))


if __name__ == "__main__":
    main()
