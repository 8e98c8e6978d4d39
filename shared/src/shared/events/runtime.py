"""The events machinery of one service process, built from its settings: the broker
connection, the outbox relay (a producer) and the consumer (a consumer).
`create_service_app(publishes_events=..., event_handlers=...)` makes one in the lifespan."""

from __future__ import annotations

from datetime import timedelta

from shared.config import ServiceSettings
from shared.db import Database
from shared.events.broker import Broker, BrokerUnavailable, Topology
from shared.events.consumer import EventConsumer, EventHandlers
from shared.events.relay import OutboxRelay


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
            OutboxRelay(
                database,
                self.broker,
                self.topology,
                service=service,
                batch_size=settings.outbox_batch_size,
                poll_seconds=settings.outbox_poll_seconds,
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
