"""The whole system as real processes on free ports, reached only through the gateway."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import SERVICES, Stack, running_stack
from devstack.replicas import ReplicatedStack, running_replicas
from eventbus import Topology
from service_testing import (
    OtlpReceiver,
    RabbitMQNode,
    delete_topology,
    free_port,
    postgres_database,
    private_redis,
    unique_topology,
)

ADMIN = {"username": "admin@example.com", "password": "admin-e2e-password"}


@pytest.fixture(scope="session")
async def events_env(
    rabbitmq_node: RabbitMQNode,
) -> AsyncIterator[Callable[[str], dict[str, str]]]:
    """The broker and the exchange and queue names of one stack of this run. The stacks
    use the run's own RabbitMQ node (a test restarts it: the machine's shared broker is
    other runs'), and names of their own on it (two stacks on the same queues would take
    each other's events)."""
    made: list[Topology] = []

    def names(label: str) -> dict[str, str]:
        made.append(topology := unique_topology(label))
        return {
            "RABBITMQ_URL": rabbitmq_node.url,
            "EVENTS_EXCHANGE": topology.exchange,
            "EVENTS_QUEUE_PREFIX": topology.queue_prefix,
        }

    yield names
    for topology in made:
        await delete_topology(topology, tuple(spec.name for spec in SERVICES), rabbitmq_node.url)


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """Where the stack's processes export their traces (what a collector would get)."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    events_env: Callable[[str], dict[str, str]],
    otlp: OtlpReceiver,
) -> Iterator[Stack]:
    """The system on SQLite, traced (exporting to `otlp`), each process logging to a file
    of its own (`Stack.log_file`) at INFO, access log included."""
    data_dir: Path = tmp_path_factory.mktemp("e2e-data")
    ports = {spec.name: free_port() for spec in SERVICES}
    extra = {
        "ADMIN_EMAIL": ADMIN["username"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "DATA_DIR": str(data_dir),
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "INFO",
        "BREAKER_RESET_SECONDS": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        # The SDK's own setting: export within 0.1 s instead of 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        # Webhook retries within a test's patience (production starts at 5 s).
        "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        **events_env("e2e"),
    }
    with running_stack(ports, data_dir, extra, log_dir=data_dir / "logs") as running:
        yield running


@pytest.fixture(scope="session")
async def pg_stack(
    tmp_path_factory: pytest.TempPathFactory, events_env: Callable[[str], dict[str, str]]
) -> AsyncIterator[Stack]:
    """The same system with every service on its own PostgreSQL database (tests that use
    it are marked `postgres`)."""
    data_dir: Path = tmp_path_factory.mktemp("e2e-pg-data")
    ports = {spec.name: free_port() for spec in SERVICES}
    extra = {
        "ADMIN_EMAIL": ADMIN["username"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "DATA_DIR": str(data_dir),
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
        "BREAKER_RESET_SECONDS": "1",
        # Five services share one server (100 connections by default).
        "DATABASE_POOL_SIZE": "5",
        "DATABASE_MAX_OVERFLOW": "10",
        # Bursts of 50 checkouts on a small CI machine: waiting a little for a pooled
        # connection beats refusing the request.
        "HTTP_CONNECT_TIMEOUT": "5",
        "HTTP_POOL_TIMEOUT": "5",
        **events_env("e2e-pg"),
    }
    async with AsyncExitStack() as databases:
        for spec in SERVICES:
            if spec.migrations:
                url = await databases.enter_async_context(postgres_database(f"e2e_{spec.name}"))
                extra[f"{spec.name.upper()}_DATABASE_URL"] = url
        with ExitStack() as processes:
            # Starting and stopping block (migrations, readiness polls): off the loop.
            running = await asyncio.to_thread(
                processes.enter_context, running_stack(ports, data_dir, extra)
            )
            try:
                yield running
            finally:
                await asyncio.to_thread(processes.close)


#: Processes of each service (and of the gateway) in the replicated stack.
REPLICAS = 2


@pytest.fixture(scope="session")
async def replica_stack(
    tmp_path_factory: pytest.TempPathFactory, events_env: Callable[[str], dict[str, str]]
) -> AsyncIterator[ReplicatedStack]:
    """The system scaled out: two processes of every service and of the gateway, each
    pair behind an nginx upstream, on PostgreSQL, Redis (the gateway's rate-limit
    counters) and the run's own RabbitMQ node. Short reservation and sweep times, so
    that a checkout abandoned by a killed process is repaired within seconds."""
    data_dir: Path = tmp_path_factory.mktemp("e2e-replicas")
    ports = {spec.name: free_port() for spec in SERVICES}
    replica_ports = {spec.name: [free_port() for _ in range(REPLICAS)] for spec in SERVICES}
    extra = {
        "ADMIN_EMAIL": ADMIN["username"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "DATA_DIR": str(data_dir),
        "RATE_LIMIT_PER_MINUTE": str(REPLICA_RATE_LIMIT),
        "LOG_LEVEL": "INFO",
        "BREAKER_RESET_SECONDS": "1",
        # Twelve processes share one PostgreSQL server with the other stacks of the run.
        "DATABASE_POOL_SIZE": "5",
        "DATABASE_MAX_OVERFLOW": "5",
        "HTTP_CONNECT_TIMEOUT": "5",
        "HTTP_POOL_TIMEOUT": "5",
        # An abandoned checkout is expired 17 s after it began (production: 16 minutes).
        "RESERVATION_TTL_SECONDS": "15",
        "PENDING_ORDER_GRACE_SECONDS": "2",
        "ORDER_SWEEP_SECONDS": "1",
        "RESERVATION_SWEEP_SECONDS": "1",
        # Relays and consumers find the broker again within seconds of its return.
        "OUTBOX_RETRY_MAX_SECONDS": "3",
        **events_env("e2e-replicas"),
    }
    async with AsyncExitStack() as resources:
        for spec in SERVICES:
            if spec.migrations:
                url = await resources.enter_async_context(postgres_database(f"rep_{spec.name}"))
                extra[f"{spec.name.upper()}_DATABASE_URL"] = url
        extra["REDIS_URL"] = resources.enter_context(private_redis(data_dir / "redis"))
        with ExitStack() as processes:
            running = await asyncio.to_thread(
                processes.enter_context,
                running_replicas(ports, replica_ports, data_dir, extra, log_dir=data_dir / "logs"),
            )
            try:
                yield running
            finally:
                await asyncio.to_thread(processes.close)


#: The gateway's limit per client and minute in the replicated stack (its default).
REPLICA_RATE_LIMIT = 300


_client_numbers = itertools.count(1)


def client_address() -> str:
    """A new address of a documentation range (RFC 5737), as if the edge proxy had seen
    this client: each test's requests count against a rate-limit budget of their own."""
    return f"198.51.100.{next(_client_numbers) % 254 + 1}"


@pytest.fixture
async def replica_gateway(replica_stack: ReplicatedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=replica_stack.gateway_url,
        timeout=30,
        headers={"X-Forwarded-For": client_address()},
    ) as client:
        yield client


@pytest.fixture
def replica_shop(replica_gateway: httpx.AsyncClient) -> Shop:
    return Shop(replica_gateway)


@pytest.fixture(params=["pg_stack", "replica_stack"], ids=["single", "replicas"])
def pg_system(request: pytest.FixtureRequest) -> Stack | ReplicatedStack:
    """The system on PostgreSQL as one process of each service, then scaled out: a test
    that takes it runs on both."""
    system: Stack | ReplicatedStack = request.getfixturevalue(request.param)
    return system


@pytest.fixture
async def pg_system_gateway(
    pg_system: Stack | ReplicatedStack,
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=pg_system.gateway_url,
        timeout=30,
        headers={"X-Forwarded-For": client_address()},
    ) as client:
        yield client


@pytest.fixture
def pg_system_shop(pg_system_gateway: httpx.AsyncClient) -> Shop:
    return Shop(pg_system_gateway)


@pytest.fixture
async def pg_gateway(pg_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pg_stack.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        yield client


class Shop:
    """A client of the public API, as a shop front end would use it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(self, email: str, password: str = "correct-horse") -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": password, "full_name": "E2E Customer"},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def login(self, email: str, password: str = "correct-horse") -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/auth/token", data={"username": email, "password": password}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def headers(self, email: str, password: str = "correct-horse") -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.login(email, password))['access_token']}"}

    async def admin_headers(self) -> dict[str, str]:
        return await self.headers(ADMIN["username"], ADMIN["password"])

    async def stocked_product(self, units: int, label: str = "E2E") -> str:
        """A new catalog product with `units` on hand, made by the administrator."""
        admin = await self.admin_headers()
        created = await self.client.post(
            "/api/v1/products",
            json={
                "sku": f"{label}-{uuid.uuid4().hex[:10]}",
                "name": f"{label.title()} item",
                "price": "30.00",
                "category": label.lower(),
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        product_id: str = created.json()["id"]
        stocked = await self.client.put(
            f"/api/v1/inventory/{product_id}", json={"available": units}, headers=admin
        )
        assert stocked.status_code in (200, 201), stocked.text
        return product_id


@pytest.fixture
def shop(gateway: httpx.AsyncClient) -> Shop:
    return Shop(gateway)


@pytest.fixture
def pg_shop(pg_gateway: httpx.AsyncClient) -> Shop:
    return Shop(pg_gateway)
