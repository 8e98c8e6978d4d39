"""A service with events starts whether or not RabbitMQ is up, and /health/ready says
how the broker is doing without taking the HTTP API down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import MetaData

from eventbus import EventEnvelope, EventHandlers, add_events, inbox_table, outbox_table
from service_testing import RABBITMQ_URL, delete_topology, eventually, free_port, unique_topology
from shared.config import ServiceSettings
from shared.db import Database
from shared.service import ServiceBuilder


def closed_port() -> int:
    return free_port()


async def settings_for(tmp_path: Path, rabbitmq_url: str, **extra: str) -> ServiceSettings:
    """Settings of a service whose SQLite database has the outbox and inbox tables."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"
    metadata = MetaData()
    outbox_table(metadata)
    inbox_table(metadata)
    database = Database(url)
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    await database.dispose()
    return ServiceSettings(
        _env_file=None,
        service_name="probe_service",
        environment="test",
        database_url=url,
        rabbitmq_url=rabbitmq_url,
        **extra,
    )


async def ready(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        return await client.get("/health/ready")


def probe_app(settings: ServiceSettings, *, events: bool) -> FastAPI:
    """A service with a database and, with `events`, an outbox relay and a consumer."""
    service = ServiceBuilder(settings, title="probe")
    service.add_health()
    service.add_database()
    if events:
        add_events(service, publishes=True, handlers=handlers)
    return service.build()


handlers = EventHandlers()


@handlers.on("thing.happened")
async def ignore_thing(session: object, event: EventEnvelope) -> None:
    return None


class TestBrokerDown:
    async def test_the_app_starts_serves_and_reports_the_broker(self, tmp_path: Path) -> None:
        settings = await settings_for(tmp_path, f"amqp://guest:guest@127.0.0.1:{closed_port()}/")
        app = probe_app(settings, events=True)

        started = time.monotonic()
        async with LifespanManager(app):
            response = await ready(app)
        assert time.monotonic() - started < 5  # neither start nor stop waited for it

        assert response.status_code == 200
        assert response.json() == {
            "status": "degraded",
            # Nor can it consume: events published meanwhile would miss its queue.
            "checks": {"database": "ok", "broker": "unavailable", "consumer": "unavailable"},
        }

    async def test_a_service_without_events_has_no_broker_check(self, tmp_path: Path) -> None:
        settings = await settings_for(tmp_path, f"amqp://guest:guest@127.0.0.1:{closed_port()}/")
        app = probe_app(settings, events=False)

        async with LifespanManager(app):
            response = await ready(app)

        assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


@pytest.fixture
async def names() -> AsyncIterator[dict[str, str]]:
    topology = unique_topology("ready")
    yield {"events_exchange": topology.exchange, "events_queue_prefix": topology.queue_prefix}
    await delete_topology(topology, ("probe_service",))


@pytest.mark.rabbitmq
async def test_ready_once_connected(tmp_path: Path, names: dict[str, str]) -> None:
    settings = await settings_for(tmp_path, RABBITMQ_URL, **names)
    app = probe_app(settings, events=True)

    async with LifespanManager(app):
        await eventually(lambda: app.state.events.broker.is_connected)
        await eventually(lambda: app.state.events.consumer.consuming.is_set())
        response = await ready(app)

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "consumer": "ok"},
    }
