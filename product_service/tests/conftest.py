"""Fixtures: one migrated database and running app per backend, shared by the whole run
(the rest comes from the `service_testing` plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from eventbus import Topology
from product_service.config import Settings
from product_service.main import create_app
from product_service.models import Base
from service_testing import (
    LocalTokens,
    delete_topology,
    running_app,
    truncate_all,
    unique_topology,
)
from service_testing.plugin import MigratedDatabase
from shared.config import Environment


@pytest.fixture(scope="session")
async def database_url(migrated_database_of: MigratedDatabase) -> AsyncIterator[str]:
    async with migrated_database_of("product_service") as url:
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
    async with running_app(create_app(settings), tokens) as app:
        yield app


@pytest.fixture(autouse=True)
async def _empty_tables(app: FastAPI) -> AsyncIterator[None]:
    yield
    await truncate_all(app.state.database.engine, Base.metadata)


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


@pytest.fixture
def internal_caller() -> str:
    """`client` calls the internal routes as order_service, their caller in production."""
    return "order_service"
