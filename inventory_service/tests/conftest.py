"""Fixtures: one migrated database and running app per backend, shared by the whole run,
and the real product service on a free port as the catalog the inventory asks (the rest
comes from the `service_testing` plugin)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

import product_service.config
import product_service.main
from eventbus import Topology
from inventory_service.config import Settings
from inventory_service.main import create_app
from inventory_service.models import Base, Stock
from service_testing import (
    LocalTokens,
    accept_local_tokens,
    delete_topology,
    migrated_database,
    running_app,
    serve,
    truncate_all,
    unique_topology,
)
from service_testing.plugin import MigratedDatabase, alembic_ini
from shared.config import Environment

MakeProduct = Callable[..., Awaitable[uuid.UUID]]


@dataclass
class Catalog:
    """The real product service, reached over HTTP like in production."""

    url: str
    app: FastAPI


@pytest.fixture(scope="session")
async def topology() -> AsyncIterator[Topology]:
    """The names the inventory app consumes from, on the shared broker: this run's own."""
    names = unique_topology("inventory")
    yield names
    await delete_topology(names, ("inventory_service",))


@pytest.fixture(scope="session")
async def catalog(
    tmp_path_factory: pytest.TempPathFactory, tokens: LocalTokens
) -> AsyncIterator[Catalog]:
    tmp_dir = tmp_path_factory.mktemp("catalog")
    # The catalog publishes where the inventory app does not listen: the tests decide
    # when stock records appear (test_events.py sends the events itself).
    catalog_topology = unique_topology("catalog")
    product_ini = alembic_ini("product_service")
    async with migrated_database("sqlite", "product_service", product_ini, tmp_dir) as url:
        settings = product_service.config.Settings(
            _env_file=None,
            database_url=url,
            environment=Environment.TEST,
            events_exchange=catalog_topology.exchange,
            events_queue_prefix=catalog_topology.queue_prefix,
        )
        app = product_service.main.create_app(settings)
        accept_local_tokens(app, tokens)
        async with serve(app) as base_url:
            yield Catalog(base_url, app)
    await delete_topology(catalog_topology)


@pytest.fixture
def deactivate_product(
    catalog: Catalog, tokens: LocalTokens
) -> Callable[[uuid.UUID], Awaitable[None]]:
    async def deactivate(product_id: uuid.UUID) -> None:
        async with AsyncClient(base_url=catalog.url) as http:
            response = await http.delete(
                f"/v1/products/{product_id}", headers=tokens.headers(role="admin")
            )
        assert response.status_code == 204, response.text

    return deactivate


@pytest.fixture
def make_product(catalog: Catalog, tokens: LocalTokens) -> MakeProduct:
    """Add a product to the real catalog; returns its id."""

    async def make(**fields: Any) -> uuid.UUID:
        body = {
            "sku": f"SKU-{uuid.uuid4().hex[:12]}",
            "name": "Test product",
            "price": "10.00",
            "category": "misc",
            **fields,
        }
        async with AsyncClient(base_url=catalog.url) as http:
            response = await http.post(
                "/v1/products", json=body, headers=tokens.headers(role="admin")
            )
        assert response.status_code == 201, response.text
        return uuid.UUID(response.json()["id"])

    return make


@pytest.fixture(scope="session")
async def database_url(migrated_database_of: MigratedDatabase) -> AsyncIterator[str]:
    async with migrated_database_of("inventory_service") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, catalog: Catalog, topology: Topology) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        environment=Environment.TEST,
        product_service_url=catalog.url,
        events_exchange=topology.exchange,
        events_queue_prefix=topology.queue_prefix,
        events_retry_delay_seconds=0.01,
        # The tests run the sweep themselves; the background one would race them.
        reservation_sweep_seconds=3600,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings, tokens: LocalTokens) -> AsyncIterator[FastAPI]:
    async with running_app(create_app(settings), tokens) as app:
        yield app


StartApp = Callable[[Settings], contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def start_app(tokens: LocalTokens) -> StartApp:
    """Run another app (other settings, same database) beside the shared one."""
    return lambda settings: running_app(create_app(settings), tokens)


@pytest.fixture(autouse=True)
async def _empty_tables(app: FastAPI) -> AsyncIterator[None]:
    yield
    await truncate_all(app.state.database.engine, Base.metadata)


class Units(NamedTuple):
    available: int
    reserved: int
    sold: int

    @property
    def total(self) -> int:
        return self.available + self.reserved + self.sold


class Inventory:
    """Shortcuts the tests start from, and the stock columns no API shows (`sold`)."""

    def __init__(
        self, client: AsyncClient, app: FastAPI, admin: dict[str, str], make_product: MakeProduct
    ) -> None:
        self.client = client
        self.app = app
        self.admin = admin
        self.make_product = make_product

    async def stocked_product(self, available: int) -> uuid.UUID:
        product_id = await self.make_product()
        await self.set_stock(product_id, available)
        return product_id

    async def set_stock(self, product_id: uuid.UUID, available: int) -> dict[str, Any]:
        response = await self.client.put(
            f"/v1/inventory/{product_id}", json={"available": available}, headers=self.admin
        )
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    async def units(self, product_id: uuid.UUID) -> Units:
        async with self.app.state.database.sessionmaker() as session:
            row = (
                await session.execute(
                    select(Stock.available, Stock.reserved, Stock.sold).where(
                        Stock.product_id == product_id
                    )
                )
            ).one()
        return Units(*row)

    async def reserve(self, order_id: uuid.UUID, items: dict[uuid.UUID, int], **extra: Any) -> Any:
        body = {
            "order_id": str(order_id),
            "items": [{"product_id": str(p), "quantity": q} for p, q in items.items()],
            **extra,
        }
        return await self.client.post("/internal/v1/reservations", json=body)

    async def commit(self, order_id: uuid.UUID) -> Any:
        return await self.client.post(f"/internal/v1/reservations/{order_id}/commit")

    async def release(self, order_id: uuid.UUID, reason: str | None = None) -> Any:
        body = None if reason is None else {"reason": reason}
        return await self.client.post(f"/internal/v1/reservations/{order_id}/release", json=body)


@pytest.fixture
def inventory(
    client: AsyncClient, app: FastAPI, admin: dict[str, str], make_product: MakeProduct
) -> Inventory:
    return Inventory(client, app, admin, make_product)


@pytest.fixture
def internal_caller() -> str:
    """`client` calls the internal routes as order_service, their caller in production."""
    return "order_service"
