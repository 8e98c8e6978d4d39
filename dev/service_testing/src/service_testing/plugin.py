"""Fixtures every service's tests share, instead of a copy in each conftest.

A service's conftest provides `app` (its app, started) and, for the database,
`database_url` (usually `migrated_database_of(<package>)`); the plugin gives the rest:
the backend parameter, locally signed tokens and the headers of an administrator and
a customer, and an HTTP client of `app` (presenting, on `/internal` routes, the
credential of the service its conftest names in `internal_caller`)."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from service_testing.credentials import RequestHook, signs_internal_calls
from service_testing.databases import migrated_database
from service_testing.rabbitmq_node import RabbitMQNode, private_rabbitmq
from service_testing.tokens import LocalTokens

#: Every database test runs on SQLite and, marked `postgres`, on PostgreSQL.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

MigratedDatabase = Callable[[str], AbstractAsyncContextManager[str]]


def alembic_ini(package: str) -> Path:
    """A service's `alembic.ini`, beside its `src/` folder (`user_service` ->
    `user_service/alembic.ini`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise LookupError(f"{package} is not installed")
    return Path(spec.origin).resolve().parents[2] / "alembic.ini"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this part of the run: "sqlite" or "postgresql"."""
    param: str = request.param
    return param


@pytest.fixture(scope="session")
def migrated_database_of(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> MigratedDatabase:
    """`async with migrated_database_of("order_service") as url:` a fresh database of this
    run's backend, migrated with that service's Alembic, dropped afterwards."""

    @asynccontextmanager
    async def make(package: str) -> AsyncIterator[str]:
        folder = tmp_path_factory.mktemp(f"{package}_{backend}")
        async with migrated_database(backend, package, alembic_ini(package), folder) as url:
            yield url

    return make


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A RabbitMQ node of this test run's own (booted on first use, stopped at the end):
    the tests that stop or restart the broker do it here, not on the machine's shared
    broker that other runs are using at the same moment."""
    with private_rabbitmq(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(scope="session")
def tokens() -> LocalTokens:
    """Signs access tokens the services under test accept (see `accept_local_tokens`)."""
    return LocalTokens()


@pytest.fixture
def admin(tokens: LocalTokens) -> dict[str, str]:
    """Bearer headers of a new administrator."""
    return tokens.headers(role="admin")


@pytest.fixture
def customer(tokens: LocalTokens) -> dict[str, str]:
    """Bearer headers of a new customer."""
    return tokens.headers(role="customer")


@pytest.fixture
def internal_caller() -> str | None:
    """The service whose credential `client` presents on `/internal` routes (the one
    that calls them in production); None: no credential, as from the outside."""
    return None


@pytest.fixture
async def client(app: FastAPI, internal_caller: str | None) -> AsyncIterator[AsyncClient]:
    """An HTTP client of the service's `app`, in process."""
    hooks: list[RequestHook] = []
    if internal_caller is not None:
        hooks.append(signs_internal_calls(internal_caller, app.state.settings.service_name))
    async with AsyncClient(
        transport=ASGITransport(app=app),
        base_url="http://test",
        event_hooks={"request": hooks},
    ) as client:
        yield client


@pytest.fixture
async def outsider(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """An HTTP client of `app` that never presents a service credential of its own."""
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client
