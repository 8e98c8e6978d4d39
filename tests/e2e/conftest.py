"""The whole system as real processes on free ports, reached only through the gateway."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.devstack import SERVICES, Stack, running_stack

ADMIN = {"username": "admin@example.com", "password": "admin-e2e-password"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("e2e-data")
    ports = {spec.name: free_port() for spec in SERVICES}
    extra = {
        "ADMIN_EMAIL": ADMIN["username"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "DATA_DIR": str(data_dir),
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
        "BREAKER_RESET_SECONDS": "1",
    }
    with running_stack(ports, data_dir, extra) as running:
        yield running


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


@pytest.fixture
def shop(gateway: httpx.AsyncClient) -> Shop:
    return Shop(gateway)
