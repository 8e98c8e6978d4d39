"""Fixtures: one migrated database and running app per backend, shared by the whole run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from product_service.config import Settings
from product_service.main import create_app
from product_service.models import Base
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


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    tmp_dir = tmp_path_factory.mktemp(f"product_{request.param}")
    async with migrated_database(request.param, "product_service", ALEMBIC_INI, tmp_dir) as url:
        yield url


@pytest.fixture(scope="session")
async def topology() -> AsyncIterator[Topology]:
    """Exchange and queue names of this run only (the broker is shared)."""
    names = unique_topology("products")
    yield names
    await delete_topology(names)


@pytest.fixture(scope="session")
async def app(database_url: str, tokens: LocalTokens, topology: Topology) -> AsyncIterator[FastAPI]:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        environment=Environment.TEST,
        events_exchange=topology.exchange,
        events_queue_prefix=topology.queue_prefix,
    )
    app = create_app(settings)
    async with LifespanManager(app):
        app.state.token_verifier = tokens.verifier()
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture(autouse=True)
async def _empty_tables(app: FastAPI) -> AsyncIterator[None]:
    yield
    await truncate_all(app.state.database.engine, Base.metadata)


@pytest.fixture
def admin(tokens: LocalTokens) -> dict[str, str]:
    return tokens.headers(role="admin")


@pytest.fixture
def customer(tokens: LocalTokens) -> dict[str, str]:
    return tokens.headers(role="customer")


@pytest.fixture
def make_product(client: AsyncClient, admin: dict[str, str]) -> Callable[..., Any]:
    """Create a product through the API; keyword arguments override the defaults."""
    counter = 0

    async def make(**fields: Any) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        body = {
            "sku": f"SKU-{counter:04d}",
            "name": f"Product {counter}",
            "description": "",
            "price": "10.00",
            "category": "misc",
            **fields,
        }
        response = await client.post("/v1/products", json=body, headers=admin)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return make
