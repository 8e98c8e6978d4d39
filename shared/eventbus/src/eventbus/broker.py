"""The broker connection of a process and the topology every process declares.

Topology (declared by code at start-up, with the same arguments everywhere; RabbitMQ
refuses a second declaration that differs):

- `ecommerce.events`: durable topic exchange; routing key = event type. Its alternate
  exchange `ecommerce.events.unroutable` (fanout) takes what no queue is bound for, into
  the queue of the same name (bounded, kept a week for inspection): an event nobody
  subscribes to yet is published, not pending, and the relay hears "unroutable" only
  when that alternate exchange is missing, a fault of the topology worth an alert.
- `ecommerce.events.dlx`: durable direct exchange for dead letters.
- `<service>.events`: one durable quorum queue per consuming service, bound to the event
  types it handles. A message handed back more than `MAX_DELIVERIES - 1` times is
  dead-lettered (quorum `x-delivery-limit`).
- `<service>.events.dlq`: durable quorum queue of that service's dead letters, bound
  to the dead-letter exchange with the service queue's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared.config import ServiceSettings

logger = logging.getLogger(__name__)

#: How many unroutable messages, and for how long, the inspection queue keeps (oldest
#: dropped first). Part of the queue's arguments, like the delivery limit below.
UNROUTABLE_MAX_MESSAGES = 100_000
UNROUTABLE_RETENTION_MS = 7 * 24 * 3600 * 1000

#: Deliveries of one message to a consumer before it goes to the dead-letter queue.
#: Part of the queue's arguments: changing it means deleting the queue (or a policy).
MAX_DELIVERIES = 5


@dataclass(frozen=True)
class Topology:
    """Names of the exchanges and queues (test runs use their own, on the same broker)."""

    exchange: str = "ecommerce.events"
    queue_prefix: str = ""

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Topology:
        return cls(exchange=settings.events_exchange, queue_prefix=settings.events_queue_prefix)

    @property
    def unroutable_exchange(self) -> str:
        return f"{self.exchange}.unroutable"

    @property
    def unroutable_queue(self) -> str:
        return f"{self.queue_prefix}{self.exchange}.unroutable"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.exchange}.dlx"

    def queue(self, service: str) -> str:
        return f"{self.queue_prefix}{service}.events"

    def dead_letter_queue(self, service: str) -> str:
        return f"{self.queue(service)}.dlq"


async def declare_exchange(
    connection: AbstractConnection, channel: AbstractChannel, topology: Topology
) -> AbstractExchange:
    r"""The events exchange on `channel`, with its alternate exchange and queue (what a
    producer needs).

    The exchange is declared with its alternate exchange first on a channel of its own:
    a broker that has `ecommerce.events` from before it had one refuses that declaration
    (PRECONDITION_FAILED, which closes the channel) and keeps refusing it, since an
    exchange's arguments never change. The exchange is then used as it is, so every
    service still starts, and a policy gives it its alternate exchange without deleting
    it or its bindings (`scripts/ensure-rabbitmq.sh` sets it on the local broker):

        rabbitmqctl set_policy --apply-to exchanges events-alternate-exchange \
            '^ecommerce\.events$' '{"alternate-exchange": "ecommerce.events.unroutable"}'

    Without that policy an event no queue takes comes back unroutable and stays pending,
    which `EventsUnroutable` reports."""
    arguments: dict[str, Any] = {"alternate-exchange": topology.unroutable_exchange}
    probe = await connection.channel(publisher_confirms=False)
    try:
        await _declare_unroutable(probe, topology)
        await probe.declare_exchange(
            topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True, arguments=arguments
        )
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        arguments = {}
        logger.warning(
            "the events exchange predates its alternate exchange argument; a policy must "
            "give it one, or events nobody subscribes to stay pending",
            extra={
                "exchange": topology.exchange,
                "alternate_exchange": topology.unroutable_exchange,
                "error": str(error),
            },
        )
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
    return await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True, arguments=arguments
    )


async def _declare_unroutable(channel: AbstractChannel, topology: Topology) -> None:
    unroutable = await channel.declare_exchange(
        topology.unroutable_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(
        topology.unroutable_queue,
        durable=True,
        arguments={
            "x-max-length": UNROUTABLE_MAX_MESSAGES,
            "x-overflow": "drop-head",
            "x-message-ttl": UNROUTABLE_RETENTION_MS,
        },
    )
    await queue.bind(unroutable)


def queue_arguments(topology: Topology, service: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": MAX_DELIVERIES - 1,
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-dead-letter-routing-key": topology.queue(service),
        # Dead-lettering stays RabbitMQ's default (at most once; the dead-letter queue is
        # on the same broker). `at-least-once` was tried: on RabbitMQ 3.10 deleting such
        # queues crashed the broker's dead-letter supervisor, and every such queue
        # declared after that stayed down until the node restarted.
    }


async def declare_service_queues(
    connection: AbstractConnection,
    channel: AbstractChannel,
    topology: Topology,
    service: str,
    routing_keys: tuple[str, ...],
    *,
    retired: tuple[str, ...] = (),
) -> tuple[AbstractQueue, AbstractQueue]:
    """A consumer's queue, bound to `routing_keys` and no longer to `retired` (removing
    a binding that is not there changes nothing), and its dead-letter queue."""
    exchange = await declare_exchange(connection, channel, topology)
    dead_letters = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(
        topology.dead_letter_queue(service),
        durable=True,
        arguments={"x-queue-type": "quorum"},
    )
    await dlq.bind(dead_letters, routing_key=topology.queue(service))
    queue = await channel.declare_queue(
        topology.queue(service), durable=True, arguments=queue_arguments(topology, service)
    )
    for routing_key in routing_keys:
        await queue.bind(exchange, routing_key=routing_key)
    for routing_key in retired:
        await queue.unbind(exchange, routing_key=routing_key)
    return queue, dlq


class _RobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, closed by its own loop when its first connection
    fails.

    Left open, aio-pika closes it from `__del__`, on the loop of whichever thread's
    garbage collection finds it: the relay thread's failed attempts were closed on the
    service's loop, which raised RuntimeError ("attached to a different loop") in a task
    nobody awaited. Reconnections after the first do not come through here."""

    async def connect(self, timeout: aiormq.abc.TimeoutType = None) -> None:  # noqa: ASYNC109 - aio-pika's signature
        try:
            await super().connect(timeout)
        except BaseException:
            await self.close()
            raise


def cancelling() -> bool:
    """Whether the running task was asked to stop: after awaiting a task it cancelled, a
    caller tells its own cancellation, which it must pass on, from the task's."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached right now."""


class Broker:
    """One robust connection per process (made in the lifespan, never at import).

    `start()` returns at once: the first connection is made in the background and
    retried, with growing pauses, until the broker answers, so a process starts (and
    serves HTTP) while RabbitMQ is down. An attempt that gets no answer within
    `connect_timeout_seconds` (a broker that accepts TCP but never completes the AMQP
    handshake) counts as failed and is retried too, rather than waited on for ever.
    After that, aio-pika's robust connection reconnects and restores channels, queues,
    bindings and consumers by itself."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        reconnect_seconds: float = 1.0,
        reconnect_max_seconds: float = 30.0,
        connect_timeout_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self.name = name
        self.reconnect_seconds = reconnect_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Set by close(): the connecting loop stops on it too, not only on its
        #: cancellation, which an attempt may turn into an error that reads "not yet".
        self._closing = False

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._connect(), name=f"broker-connect-{self.name}")

    async def connection(self) -> AbstractRobustConnection:
        """The connection, once the first attempt succeeded (waits until then)."""
        await self._connected.wait()
        assert self._connection is not None
        return self._connection

    def connection_now(self) -> AbstractRobustConnection:
        """The connection if it is up; `BrokerUnavailable` otherwise (never waits)."""
        if self._connection is None or not self._connection.connected.is_set():
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self._connection

    async def _connect(self) -> None:
        delay = self.reconnect_seconds
        while True:
            try:
                self._connection = await aio_pika.connect_robust(
                    self.url,
                    client_properties={"connection_name": self.name},
                    reconnect_interval=self.reconnect_seconds,
                    connection_class=_RobustConnection,
                    timeout=self.connect_timeout_seconds,
                )
            except Exception as error:  # refused, DNS, auth, timeout: all mean "not yet"
                if self._closing:
                    return
                logger.warning(
                    "RabbitMQ is not reachable; trying again",
                    extra={"error": repr(error), "retry_in_seconds": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_seconds)
            else:
                logger.info("connected to RabbitMQ", extra={"connection": self.name})
                self._connected.set()
                return

    async def close(self) -> None:
        if self._task is not None:
            self._closing = True
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if cancelling():  # close() itself was cancelled, not only the task
                    raise
            self._task = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
