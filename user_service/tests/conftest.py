from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from eventbus import Topology
from service_testing import delete_topology, running_app, truncate_all, unique_topology
from service_testing.plugin import MigratedDatabase
from user_service.config import Settings
from user_service.main import create_app
from user_service.models import Base
from user_service.service import AccountService

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"


@pytest.fixture(scope="session")
async def database_url(migrated_database_of: MigratedDatabase) -> AsyncIterator[str]:
    async with migrated_database_of("user_service") as url:
        yield url


@pytest.fixture(scope="session")
async def topology() -> AsyncIterator[Topology]:
    """Exchange and queue names of this run only (the broker is shared)."""
    names = unique_topology("users")
    yield names
    await delete_topology(names)


@pytest.fixture(scope="session")
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, topology: Topology
) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        data_dir=str(tmp_path_factory.mktemp("user-data")),
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        environment="test",
        events_exchange=topology.exchange,
        events_queue_prefix=topology.queue_prefix,
        # Small enough that the throttle's tests reach the limits quickly.
        login_failures_per_account=5,
        login_failures_per_address=12,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(create_app(settings)) as application:
        yield application


@pytest.fixture(autouse=True)
async def clean_database(app: FastAPI) -> None:
    """Every test starts with only the bootstrap administrator, and no failed logins."""
    await app.state.login_throttle.storage.reset()
    database = app.state.database
    await truncate_all(database.engine, Base.metadata)
    async with database.sessionmaker() as session:
        await AccountService(session, app.state.password_hasher).ensure_admin(
            ADMIN_EMAIL, ADMIN_PASSWORD
        )


class UserApi:
    """Shortcuts for the calls most tests start with."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(
        self,
        email: str = "ada@example.com",
        password: str = "correct-horse",
        full_name: str = "Ada Lovelace",
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/auth/register",
            json={"email": email, "password": password, "full_name": full_name},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def login(
        self, email: str = "ada@example.com", password: str = "correct-horse"
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/auth/token", data={"username": email, "password": password}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def headers(
        self, email: str = "ada@example.com", password: str = "correct-horse"
    ) -> dict[str, str]:
        tokens = await self.login(email, password)
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    async def admin_headers(self) -> dict[str, str]:
        return await self.headers(ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def api(client: httpx.AsyncClient) -> UserApi:
    return UserApi(client)


@pytest.fixture
def internal_caller() -> str:
    """`client` calls the internal routes as order_service, one of their callers."""
    return "order_service"
