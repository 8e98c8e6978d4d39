"""Fixtures: one migrated database and running app per backend, shared by the whole run,
consuming from this run's own exchange on the shared broker (the rest comes from the
`service_testing` plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from eventbus import Topology
from notification_service.config import Settings
from notification_service.main import create_app
from notification_service.models import Base
from service_testing import LocalTokens, delete_topology, running_app, truncate_all, unique_topology
from service_testing.plugin import MigratedDatabase
from shared.config import Environment


@pytest.fixture(scope="session")
async def topology() -> AsyncIterator[Topology]:
    """The names the app consumes from, on the shared broker: this run's own."""
    names = unique_topology("notification")
    yield names
    await delete_topology(names, ("notification_service",))


@pytest.fixture(scope="session")
async def database_url(migrated_database_of: MigratedDatabase) -> AsyncIterator[str]:
    async with migrated_database_of("notification_service") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, topology: Topology) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        environment=Environment.TEST,
        events_exchange=topology.exchange,
        events_queue_prefix=topology.queue_prefix,
        events_retry_delay_seconds=0.01,
        smtp_retry_delay_seconds=0.01,
        # Webhooks retried within the test's patience; an endpoint that does not answer
        # costs three seconds, not ten.
        webhook_retry_base_seconds=0.05,
        webhook_retry_max_seconds=2.0,
        webhook_timeout_seconds=3.0,
        webhook_poll_seconds=0.2,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings, tokens: LocalTokens) -> AsyncIterator[FastAPI]:
    async with running_app(create_app(settings), tokens) as app:
        yield app


@pytest.fixture(autouse=True)
async def _empty_tables(app: FastAPI) -> AsyncIterator[None]:
    yield
    # The delivery worker pauses meanwhile: a delivery it is recording would deadlock
    # with TRUNCATE on PostgreSQL.
    worker = app.state.webhook_worker
    await worker.stop()
    await truncate_all(app.state.database.engine, Base.metadata)
    await worker.start()
