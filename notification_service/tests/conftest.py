"""Fixtures: one migrated database and running app per backend, shared by the whole run,
consuming from this run's own exchange on the shared broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from notification_service.config import Settings
from notification_service.main import create_app
from notification_service.models import Base
from shared.config import Environment
from shared.events import Topology
from shared.testing import (
    LocalTokens,
    delete_topology,
    migrated_database,
    truncate_all,
    unique_topology,
)

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def tokens() -> LocalTokens:
    return LocalTokens()


@pytest.fixture(scope="session")
async def topology() -> AsyncIterator[Topology]:
    """The names the app consumes from, on the shared broker: this run's own."""
    names = unique_topology("notification")
    yield names
    await delete_topology(names, ("notification_service",))


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    tmp_dir = tmp_path_factory.mktemp(f"notification_{request.param}")
    async with migrated_database(
        request.param, "notification_service", ALEMBIC_INI, tmp_dir
    ) as url:
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
    )


@contextlib.asynccontextmanager
async def running_app(settings: Settings, tokens: LocalTokens) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with LifespanManager(app):
        app.state.token_verifier = tokens.verifier()
        yield app


@pytest.fixture(scope="session")
async def app(settings: Settings, tokens: LocalTokens) -> AsyncIterator[FastAPI]:
    async with running_app(settings, tokens) as app:
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture(autouse=True)
async def _empty_tables(app: FastAPI) -> AsyncIterator[None]:
    yield
    await truncate_all(app.state.database.engine, Base.metadata)
