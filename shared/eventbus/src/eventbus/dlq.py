"""Look into a service's dead-letter queue and send its messages back.

    python -m eventbus.dlq list   --service inventory_service [--limit 50]
    python -m eventbus.dlq replay --service inventory_service [--limit N] [--id MESSAGE_ID]

`list` prints one JSON object per dead letter (id, type, original routing key, why and
when it died, the start of its body) and leaves the queue as it was. `replay`
republishes each message to the events exchange with its original routing key (publisher
confirms, mandatory) and only then removes it from the dead-letter queue; fix the cause
first, or the message comes back. Every queue bound to that routing key gets the
message again; consumers that processed it already recognise the id and skip it.

The broker and the names come from the same settings the services read (RABBITMQ_URL,
EVENTS_EXCHANGE, EVENTS_QUEUE_PREFIX, or a .env file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from eventbus.broker import Topology, declare_exchange
from shared.config import ServiceSettings

#: Headers the broker adds on the way to the dead-letter queue; not sent again.
_BROKER_HEADERS = ("x-death", "x-delivery-count")


def _death(message: AbstractIncomingMessage) -> dict[str, Any]:
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def original_routing_key(message: AbstractIncomingMessage) -> str | None:
    """The routing key the message was first published with (the event type)."""
    keys = _death(message).get("routing-keys")
    if isinstance(keys, list) and keys:
        return str(keys[0])
    return message.type


def describe(message: AbstractIncomingMessage) -> dict[str, Any]:
    death = _death(message)
    died_at = death.get("time")
    headers = message.headers or {}
    return {
        "message_id": message.message_id,
        "type": message.type,
        "routing_key": original_routing_key(message),
        "reason": headers.get("x-first-death-reason") or death.get("reason"),
        "queue": headers.get("x-first-death-queue") or death.get("queue"),
        "dead_lettered_at": died_at.isoformat() if isinstance(died_at, datetime) else None,
        "times_dead_lettered": death.get("count"),
        "body": message.body[:500].decode("utf-8", errors="replace"),
    }


async def _dead_letter_queue(
    channel: AbstractChannel, topology: Topology, service: str
) -> AbstractQueue:
    return await channel.declare_queue(topology.dead_letter_queue(service), passive=True)


async def list_dead_letters(
    url: str, topology: Topology, service: str, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` dead letters, oldest first; the queue is left as it was."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await _dead_letter_queue(channel, topology, service)
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            found.append(describe(message))
        # Closing the channel without acknowledging puts every message back.
        await channel.close()
        return found
    finally:
        await connection.close()


async def replay_dead_letters(
    url: str,
    topology: Topology,
    service: str,
    *,
    limit: int | None = None,
    message_id: str | None = None,
    report: Callable[[dict[str, Any]], None] = lambda _: None,
) -> int:
    """Republish dead letters (all, up to `limit`, or the one with `message_id`) and
    remove each from the dead-letter queue once the broker confirmed it; returns how
    many were replayed. Stops at the first message that cannot be republished."""
    connection = await aio_pika.connect(url)
    replayed = 0
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await declare_exchange(connection, channel, topology)
        queue = await _dead_letter_queue(channel, topology, service)
        remaining = queue.declaration_result.message_count or 0
        # Each message is looked at once: those skipped stay unacknowledged until the
        # channel closes, so the loop never sees them twice.
        for _ in range(remaining):
            if limit is not None and replayed >= limit:
                break
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if message_id is not None and message.message_id != message_id:
                continue
            routing_key = original_routing_key(message)
            if not routing_key:
                report({"message_id": message.message_id, "skipped": "no routing key"})
                continue
            headers = {
                key: value
                for key, value in (message.headers or {}).items()
                if key not in _BROKER_HEADERS and not key.startswith("x-first-death-")
            }
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type,
                    message_id=message.message_id,
                    type=message.type,
                    timestamp=message.timestamp,
                    app_id=message.app_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
                mandatory=True,
            )
            await message.ack()
            replayed += 1
            report({"message_id": message.message_id, "replayed_to": routing_key})
        await channel.close()
    finally:
        await connection.close()
    return replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eventbus.dlq",
        description="List or replay a service's dead-lettered events.",
    )
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("--service", required=True, help="e.g. inventory_service")
    parser.add_argument("--limit", type=int, default=None, help="at most this many messages")
    parser.add_argument("--id", dest="message_id", help="replay only this message id")
    args = parser.parse_args(argv)

    settings = ServiceSettings(service_name=args.service)
    url = settings.rabbitmq_url.get_secret_value()
    topology = Topology.from_settings(settings)

    def emit(entry: dict[str, Any]) -> None:
        print(json.dumps(entry, ensure_ascii=False, default=str), flush=True)

    try:
        if args.command == "list":
            for entry in asyncio.run(
                list_dead_letters(url, topology, args.service, args.limit or 100)
            ):
                emit(entry)
            return 0
        replayed = asyncio.run(
            replay_dead_letters(
                url,
                topology,
                args.service,
                limit=args.limit,
                message_id=args.message_id,
                report=emit,
            )
        )
    except aio_pika.exceptions.ChannelNotFoundEntity:
        print(f"{topology.dead_letter_queue(args.service)} does not exist", file=sys.stderr)
        return 1
    print(f"replayed {replayed} message(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
