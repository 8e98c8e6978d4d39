"""Fixtures: the real product_service and inventory_service run under uvicorn on free
ports (each with its own migrated database), and order_service talks to them over HTTP.

Everything runs once per backend (SQLite, then PostgreSQL): the three databases of a
run are all of that backend (the `backend` fixture of the `service_testing` plugin)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventbus import Topology
from inventory_service.config import Settings as InventorySettings
from inventory_service.main import create_app as create_inventory_app
from order_service.config import Settings
from order_service.deps import get_payments
from order_service.main import create_app
from order_service.models import Base
from order_service.payments import PaymentResult, SandboxPaymentProvider
from product_service.config import Settings as ProductSettings
from product_service.main import create_app as create_product_app
from service_testing import (
    LocalTokens,
    accept_local_tokens,
    delete_topology,
    free_port,
    running_app,
    serve,
    signs_internal_calls,
    truncate_all,
    unique_topology,
)
from service_testing.plugin import MigratedDatabase
from shared.config import Environment
from shared.db import Database


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (a service that is down)."""
    return free_port()


@dataclass
class Server:
    app: Any
    url: str


@asynccontextmanager
async def serve_in_thread(app: Any) -> AsyncIterator[Server]:
    """Serve an ASGI app over real HTTP on a free port, from a thread of its own (its
    own event loop, as if it were another process), until the block ends."""
    async with serve(app, in_thread=True) as url:
        yield Server(app, url)


def order_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": Environment.TEST,
        # Tests call the sweep themselves; the background one stays out of the way.
        "order_sweep_seconds": 3600,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def events_settings(topology: Topology) -> dict[str, Any]:
    return {
        "events_exchange": topology.exchange,
        "events_queue_prefix": topology.queue_prefix,
    }


@pytest.fixture(scope="session")
async def catalog_topology() -> AsyncIterator[Topology]:
    """This run's names for the catalog's events, which the inventory consumes (never
    the shared broker's real exchange and queues)."""
    names = unique_topology("order-tests-catalog")
    yield names
    await delete_topology(names, ("inventory_service",))


@pytest.fixture(scope="session")
async def order_topology() -> AsyncIterator[Topology]:
    """Where the order apps publish: nothing consumes it, so these tests see the
    checkout's HTTP calls to inventory alone (inventory_service's tests cover its
    order event handlers, the end-to-end suite the two together)."""
    names = unique_topology("order-tests")
    yield names
    await delete_topology(names)


@pytest.fixture(scope="session")
async def product_server(
    migrated_database_of: MigratedDatabase, tokens: LocalTokens, catalog_topology: Topology
) -> AsyncIterator[Server]:
    async with migrated_database_of("product_service") as url:
        settings = ProductSettings(
            _env_file=None,
            database_url=url,
            environment=Environment.TEST,
            **events_settings(catalog_topology),
        )
        app = create_product_app(settings)
        accept_local_tokens(app, tokens)
        async with serve_in_thread(app) as server:
            yield server


@pytest.fixture(scope="session")
async def inventory_server(
    migrated_database_of: MigratedDatabase,
    tokens: LocalTokens,
    product_server: Server,
    catalog_topology: Topology,
) -> AsyncIterator[Server]:
    async with migrated_database_of("inventory_service") as url:
        settings = InventorySettings(
            _env_file=None,
            database_url=url,
            environment=Environment.TEST,
            product_service_url=product_server.url,
            **events_settings(catalog_topology),
        )
        app = create_inventory_app(settings)
        accept_local_tokens(app, tokens)
        async with serve_in_thread(app) as server:
            yield server


@pytest.fixture(scope="session")
async def database_url(migrated_database_of: MigratedDatabase) -> AsyncIterator[str]:
    async with migrated_database_of("order_service") as url:
        yield url


OrderAppFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


@pytest.fixture(scope="session")
def order_app_factory(
    database_url: str,
    tokens: LocalTokens,
    product_server: Server,
    inventory_server: Server,
    order_topology: Topology,
) -> OrderAppFactory:
    """Start another order_service app on the same database with other settings (a dead
    or slow dependency, short timeouts)."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[FastAPI]:
        upstreams = {
            "product_service_url": product_server.url,
            "inventory_service_url": inventory_server.url,
            **events_settings(order_topology),
        }
        settings = order_settings(database_url, **{**upstreams, **overrides})
        async with running_app(create_app(settings), tokens) as app:
            yield app

    return make


@pytest.fixture(scope="session")
async def order_servers(
    database_url: str,
    tokens: LocalTokens,
    product_server: Server,
    inventory_server: Server,
    order_topology: Topology,
) -> AsyncIterator[tuple[Server, Server]]:
    """Two more order_service apps on the same database, each served over HTTP from a
    thread of its own, as two replicas would be (streams need a real server)."""
    settings = order_settings(
        database_url,
        product_service_url=product_server.url,
        inventory_service_url=inventory_server.url,
        order_stream_ping_seconds=1,
        # Two more apps on a PostgreSQL server every test run shares: few connections.
        database_pool_size=2,
        database_max_overflow=2,
        **events_settings(order_topology),
    )
    apps = create_app(settings), create_app(settings)
    for app in apps:
        accept_local_tokens(app, tokens)
    async with serve_in_thread(apps[0]) as first, serve_in_thread(apps[1]) as second:
        yield first, second


@pytest.fixture(scope="session")
async def app(order_app_factory: OrderAppFactory) -> AsyncIterator[FastAPI]:
    async with order_app_factory() as app:
        yield app


@pytest.fixture(autouse=True)
async def _empty_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Each test that used the order database leaves it empty for the next."""
    yield
    if "app" in request.fixturenames:
        # Set up by the test already: this only fetches it (setting up an async session
        # fixture from here would need a second event loop).
        app: FastAPI = request.getfixturevalue("app")
        await truncate_all(app.state.database.engine, Base.metadata)
    elif "database_url" in request.fixturenames:
        # The test ran its own apps (order_app_factory) on the order database: an
        # engine of its own empties it.
        database = Database(request.getfixturevalue("database_url"))
        try:
            await truncate_all(database.engine, Base.metadata)
        finally:
            await database.dispose()


@dataclass
class Customer:
    """A signed-in customer: their id and bearer headers."""

    id: uuid.UUID
    auth: dict[str, str]

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Bearer headers plus an Idempotency-Key (a fresh one unless given)."""
        return {**self.auth, "Idempotency-Key": key or f"key-{uuid.uuid4()}"}


@pytest.fixture
def make_customer(tokens: LocalTokens) -> Callable[[], Customer]:
    def make() -> Customer:
        user_id = uuid.uuid4()
        return Customer(user_id, tokens.headers(user_id))

    return make


@pytest.fixture
def customer(make_customer: Callable[[], Customer]) -> Customer:
    return make_customer()


def order_body(*lines: tuple[dict[str, Any], int], token: str = "tok_ok") -> dict[str, Any]:
    """A POST /v1/orders body: (product, quantity) lines and a payment token."""
    return {
        "items": [
            {"product_id": product["id"], "quantity": quantity} for product, quantity in lines
        ],
        "payment_token": token,
    }


class Shop:
    """The catalog and stock as administrators set them up, through the real services."""

    body = staticmethod(order_body)

    def __init__(
        self, products: httpx.AsyncClient, inventory: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        self.products = products
        self.inventory = inventory
        self.admin = admin

    async def product(
        self, *, price: str = "12.99", stock: int | None = 10, **fields: Any
    ) -> dict[str, Any]:
        """A new catalog product, with `stock` units on hand (no record when None)."""
        body = {
            "sku": f"SKU-{uuid.uuid4().hex[:12]}",
            "name": f"Product {uuid.uuid4().hex[:6]}",
            "price": price,
            "category": "test",
            **fields,
        }
        response = await self.products.post("/v1/products", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        product: dict[str, Any] = response.json()
        if stock is not None:
            await self.set_stock(product["id"], stock)
        return product

    async def deactivate(self, product_id: str) -> None:
        response = await self.products.delete(f"/v1/products/{product_id}", headers=self.admin)
        assert response.status_code == 204, response.text

    async def set_stock(self, product_id: str, available: int) -> None:
        response = await self.inventory.put(
            f"/v1/inventory/{product_id}", json={"available": available}, headers=self.admin
        )
        assert response.status_code in (200, 201), response.text

    async def reservation(self, order_id: str) -> dict[str, Any] | None:
        """Inventory's reservation of the order (None when it has none)."""
        response = await self.inventory.get(f"/internal/v1/reservations/{order_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        reservation: dict[str, Any] = response.json()
        return reservation

    async def stock(self, product_id: str) -> tuple[int, int]:
        """(available, reserved) of a product."""
        response = await self.inventory.get(f"/v1/inventory/{product_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        return body["available"], body["reserved"]

    async def wait_for_stock(
        self, product_id: str, expected: tuple[int, int], within: float = 15.0
    ) -> None:
        """Poll until the product's (available, reserved) is `expected`."""
        deadline = time.monotonic() + within
        while (current := await self.stock(product_id)) != expected:
            assert time.monotonic() < deadline, f"stock is {current}, not {expected}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def shop(
    product_server: Server, inventory_server: Server, admin: dict[str, str]
) -> AsyncIterator[Shop]:
    async with (
        httpx.AsyncClient(base_url=product_server.url, timeout=10) as products,
        httpx.AsyncClient(
            base_url=inventory_server.url,
            timeout=10,
            # A test standing in for a process of order_service calls as it would.
            event_hooks={"request": [signs_internal_calls("order_service", "inventory_service")]},
        ) as inventory,
    ):
        yield Shop(products, inventory, admin)


PlaceOrder = Callable[..., Awaitable[httpx.Response]]


class HeldPayments(SandboxPaymentProvider):
    """The sandbox provider holding every charge and pay-back until `release` is set:
    the request that called it keeps running (its Idempotency-Key in progress) for as
    long as a test needs."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def _hold(self) -> None:
        self.called.set()
        await self.release.wait()

    async def charge(
        self, *, order_id: uuid.UUID, amount: Decimal, currency: str, token: str
    ) -> PaymentResult:
        await self._hold()
        return await super().charge(
            order_id=order_id, amount=amount, currency=currency, token=token
        )

    async def pay_back(
        self, *, order_id: uuid.UUID, refund_id: uuid.UUID, amount: Decimal, currency: str
    ) -> str:
        await self._hold()
        return await super().pay_back(
            order_id=order_id, refund_id=refund_id, amount=amount, currency=currency
        )


class RecordedPayments(SandboxPaymentProvider):
    """The sandbox provider, keeping the order id of every charge and refund."""

    def __init__(self) -> None:
        self.charged: list[uuid.UUID] = []
        self.refunded: list[uuid.UUID] = []

    async def charge(
        self, *, order_id: uuid.UUID, amount: Decimal, currency: str, token: str
    ) -> PaymentResult:
        self.charged.append(order_id)
        return await super().charge(
            order_id=order_id, amount=amount, currency=currency, token=token
        )

    async def refund(self, *, order_id: uuid.UUID) -> None:
        self.refunded.append(order_id)
        await super().refund(order_id=order_id)


@pytest.fixture
def recorded_payments(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedPayments]:
    """`app` paying, and giving back, through a `RecordedPayments` for this test."""
    payments = RecordedPayments()
    app.dependency_overrides[get_payments] = lambda: payments
    monkeypatch.setattr(app.state.compensator, "payments", payments)
    yield payments
    del app.dependency_overrides[get_payments]


@pytest.fixture
def held_payments(app: FastAPI) -> Iterator[HeldPayments]:
    """`app` paying through a `HeldPayments` for this test."""
    payments = HeldPayments()
    app.dependency_overrides[get_payments] = lambda: payments
    yield payments
    payments.release.set()
    del app.dependency_overrides[get_payments]


@pytest.fixture
def place_order(client: httpx.AsyncClient, customer: Customer) -> PlaceOrder:
    """POST /v1/orders as `customer` (or `as_`) with a fresh Idempotency-Key (or `key`)."""

    async def place(
        *lines: tuple[dict[str, Any], int],
        token: str = "tok_ok",
        as_: Customer | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        who = as_ or customer
        return await client.post(
            "/v1/orders", json=order_body(*lines, token=token), headers=who.headers(key)
        )

    return place


@pytest.fixture
def slow_proxy_factory() -> Callable[[str], AbstractAsyncContextManager[SlowProxy]]:
    @asynccontextmanager
    async def make(target: str) -> AsyncIterator[SlowProxy]:
        proxy = SlowProxy(target)
        async with serve_in_thread(proxy.app) as server:
            proxy.url = server.url
            yield proxy
            proxy.mode = "pass"

    return make


class SlowProxy:
    """Stands between order_service and inventory_service: passes calls through, or
    (`mode`) holds reservation requests `delay` seconds before passing them on, or
    answers every call 503 as an inventory that is down would be reported."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.url = ""
        self.mode = "pass"
        self.delay = 1.0
        #: "METHOD /path" of every call that came through.
        self.calls: list[str] = []
        self.app = Starlette(
            routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "PUT"])]
        )

    async def _forward(self, request: Request) -> Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.mode == "down":
            return Response(status_code=503)
        body = await request.body()
        if self.mode == "slow_reserve" and request.url.path == "/internal/v1/reservations":
            await asyncio.sleep(self.delay)
        async with httpx.AsyncClient(base_url=self.target, timeout=10) as upstream:
            answer = await upstream.request(
                request.method,
                request.url.path,
                params=list(request.query_params.multi_items()),
                content=body,
                headers={
                    name: request.headers[name]
                    for name in ("content-type", "authorization")
                    if name in request.headers
                },
            )
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )
