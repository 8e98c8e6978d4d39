"""RabbitMQ names of a test run's own on the shared broker, deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid

import aio_pika

from eventbus.broker import Topology

#: Where the integration suite finds RabbitMQ (scripts/ensure-rabbitmq.sh starts it).
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def unique_topology(label: str = "test") -> Topology:
    """Exchange and queue names no other test run uses (on the same broker)."""
    run = f"{label}-{uuid.uuid4().hex[:8]}"
    return Topology(exchange=f"{run}.events", queue_prefix=f"{run}.")


async def delete_topology(
    topology: Topology, services: tuple[str, ...] = (), url: str = RABBITMQ_URL
) -> None:
    """Delete a test run's exchanges and the queues of `services` (best effort) on the
    broker at `url`."""
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception:
        return  # no broker: nothing was declared on it either
    try:
        # A failed delete (already gone) closes its channel: one channel per delete.
        for service in services:
            for queue in (topology.queue(service), topology.dead_letter_queue(service)):
                with contextlib.suppress(Exception):
                    channel = await connection.channel()
                    await channel.queue_delete(queue, if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(topology.unroutable_queue, if_unused=False, if_empty=False)
        exchanges = (topology.exchange, topology.dead_letter_exchange, topology.unroutable_exchange)
        for exchange in exchanges:
            with contextlib.suppress(Exception):
                channel = await connection.channel()
                await channel.exchange_delete(exchange, if_unused=False)
    finally:
        await connection.close()
