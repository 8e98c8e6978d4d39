"""Login throttling through the gateway: an attacker who spreads his guesses for one
account over many forwarded addresses is stopped, whether the account exists or not, and
one address guessing many accounts is stopped too."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = pytest.mark.e2e

#: The user service's defaults (LOGIN_FAILURES_PER_ACCOUNT, _PER_ADDRESS, _WINDOW_SECONDS).
PER_ACCOUNT = 10
PER_ADDRESS = 50
WINDOW_SECONDS = 900


async def login(
    gateway: httpx.AsyncClient, email: str, password: str, address: str
) -> httpx.Response:
    # The test client connects from 127.0.0.1, a proxy the gateway trusts: its
    # X-Forwarded-For names the client, as a load balancer's would.
    return await gateway.post(
        "/api/v1/auth/token",
        data={"username": email, "password": password},
        headers={"X-Forwarded-For": address},
    )


def assert_throttled(response: httpx.Response) -> None:
    problem = assert_problem(response, 429)
    assert problem["type"].endswith("/login-throttled")
    assert 1 <= int(response.headers["retry-after"]) <= WINDOW_SECONDS


def email(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


class TestPerAccount:
    async def test_45_guesses_from_45_addresses_end_in_429(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        victim = email("victim")
        await shop.register(victim)
        answers = [
            (await login(gateway, victim, f"guess-{n}", f"198.51.100.{n + 1}")).status_code
            for n in range(45)
        ]
        assert answers == [401] * PER_ACCOUNT + [429] * (45 - PER_ACCOUNT)

        # The right password, from an address never seen: still 429, or the attacker
        # would learn he found it.
        assert_throttled(await login(gateway, victim, "correct-horse", "192.0.2.200"))

    async def test_an_unknown_account_is_throttled_alike(self, gateway: httpx.AsyncClient) -> None:
        nobody = email("nobody")
        answers = [
            (await login(gateway, nobody, f"guess-{n}", f"198.51.101.{n + 1}")).status_code
            for n in range(PER_ACCOUNT + 1)
        ]
        assert answers == [401] * PER_ACCOUNT + [429]
        assert_throttled(await login(gateway, nobody, "guess", "198.51.101.250"))

    async def test_a_success_elsewhere_does_not_reset_the_window(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        victim = email("owner")
        await shop.register(victim)
        for n in range(PER_ACCOUNT - 1):
            assert_problem(await login(gateway, victim, "guess", f"198.51.102.{n + 1}"), 401)
        # The owner logs in from home in between.
        assert (await login(gateway, victim, "correct-horse", "192.0.2.10")).status_code == 200

        assert_problem(await login(gateway, victim, "guess", "198.51.102.100"), 401)
        assert_throttled(await login(gateway, victim, "guess", "198.51.102.101"))


class TestPerAddress:
    async def test_one_address_guessing_many_accounts_is_stopped(
        self, gateway: httpx.AsyncClient, shop: Shop
    ) -> None:
        owner = email("bystander")
        await shop.register(owner)
        for n in range(PER_ADDRESS):
            assert_problem(await login(gateway, email(f"spray{n}"), "123456", "203.0.113.66"), 401)

        assert_throttled(await login(gateway, owner, "correct-horse", "203.0.113.66"))
        # The service sees each client's own address: the account works from elsewhere.
        assert (await login(gateway, owner, "correct-horse", "203.0.113.67")).status_code == 200
