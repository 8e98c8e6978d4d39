"""The events machinery of one service process, built from its settings: the broker
connection, the outbox relay (a producer; in a thread of its own, so the requests keep
no event waiting) and the consumer (a consumer).
`add_events(service, publishes=..., handlers=...)` makes one in the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from eventbus.broker import Broker, BrokerUnavailable, Topology
from eventbus.consumer import EventConsumer, EventHandlers
from eventbus.relay_thread import RelayThread
from shared.config import ServiceSettings
from shared.db import Database
from shared.service import ServiceBuilder


class ServiceEvents:
    def __init__(
        self,
        settings: ServiceSettings,
        database: Database,
        *,
        publishes: bool,
        handlers: EventHandlers | None,
    ) -> None:
        service = settings.service_name
        self.topology = Topology.from_settings(settings)
        self.broker = Broker(
            settings.rabbitmq_url.get_secret_value(),
            name=service,
            # aio-pika retries a lost connection at this fixed interval and logs each try.
            reconnect_seconds=2.0,
            reconnect_max_seconds=settings.outbox_retry_max_seconds,
        )
        self.relay = (
            RelayThread(
                database,
                self.broker,
                self.topology,
                service=service,
                batch_size=settings.outbox_batch_size,
                poll_seconds=settings.outbox_poll_seconds,
                linger_seconds=settings.outbox_linger_seconds,
                publish_timeout_seconds=settings.outbox_publish_timeout_seconds,
                retry_max_seconds=settings.outbox_retry_max_seconds,
                retention=timedelta(hours=settings.outbox_retention_hours),
            )
            if publishes
            else None
        )
        self.consumer = (
            EventConsumer(
                database,
                self.broker,
                self.topology,
                handlers,
                service=service,
                prefetch=settings.events_prefetch,
                batch_size=settings.events_batch_size,
                linger_seconds=settings.events_linger_seconds,
                retry_delay_seconds=settings.events_retry_delay_seconds,
                inbox_retention=timedelta(days=settings.inbox_retention_days),
            )
            if handlers is not None
            else None
        )

    async def start(self) -> None:
        """Returns at once; the broker is reached (and retried) in the background."""
        await self.broker.start()
        if self.relay is not None:
            await self.relay.start()
        if self.consumer is not None:
            await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.broker.close()

    async def check_broker(self) -> None:
        """Readiness: raises while the broker connection is down."""
        if not self.broker.is_connected:
            raise BrokerUnavailable("not connected to RabbitMQ")


def add_events(
    service: ServiceBuilder, *, publishes: bool = False, handlers: EventHandlers | None = None
) -> None:
    """The step of a service that publishes (`publishes`: its outbox relay) or consumes
    (`handlers`: its queue's consumer with inbox) events; after `add_database`.

    Starts without waiting for RabbitMQ (`app.state.events`): the outbox keeps a
    producer correct while the broker is away, so the HTTP API stays up, and
    /health/ready reports the broker without failing on it."""
    settings = service.settings

    @asynccontextmanager
    async def events_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events = ServiceEvents(settings, app.state.database, publishes=publishes, handlers=handlers)
        app.state.events = events
        await events.start()
        try:
            yield
        finally:
            await events.stop()

    service.add_lifespan(events_lifespan)
    service.add_ready_check("broker", _check_broker, degraded=True)
    if handlers is not None:
        service.add_ready_check("consumer", _check_consumer, degraded=True)


async def _check_broker(app: FastAPI) -> None:
    events: ServiceEvents = app.state.events
    await events.check_broker()


async def _check_consumer(app: FastAPI) -> None:
    """Degraded until the service's queue is declared, bound and consumed: an event
    published before that goes to the alternate exchange, not to this service (so a
    local stack starts its consumers first and waits for this)."""
    events: ServiceEvents = app.state.events
    if events.consumer is None or not events.consumer.consuming.is_set():
        raise BrokerUnavailable("not consuming events yet")
