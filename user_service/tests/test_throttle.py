"""Login throttling: failed logins counted per account and per address, 429 with
`Retry-After` past the limit, the same for unknown accounts, counters shared through Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service_testing import assert_problem, private_redis
from shared.counters import counter_storage
from user_service.errors import LoginThrottled
from user_service.throttle import LoginThrottle

WINDOW_SECONDS = 900


@pytest.fixture
def login_from(app: FastAPI) -> Any:
    """POST /v1/auth/token as a client at `address` would (the address the service sees
    once its server resolved the proxies' X-Forwarded-For)."""

    async def login(address: str, email: str, password: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://user-service") as c:
            return await c.post("/v1/auth/token", data={"username": email, "password": password})

    return login


def assert_throttled(response: httpx.Response) -> None:
    problem = assert_problem(response, 429)
    assert problem["type"].endswith("/login-throttled")
    assert 1 <= int(response.headers["retry-after"]) <= WINDOW_SECONDS


class TestPerAccount:
    async def test_failures_from_many_addresses_lock_the_account(
        self, api: Any, app: FastAPI, login_from: Any
    ) -> None:
        await api.register()
        limit = app.state.settings.login_failures_per_account
        for n in range(limit):
            response = await login_from(f"198.51.100.{n + 1}", "ada@example.com", "wrong-guess")
            assert_problem(response, 401)

        # Even the right password, from an address never seen, waits: a 200 among the
        # 429s would tell the attacker he found it.
        assert_throttled(await login_from("203.0.113.7", "ada@example.com", "correct-horse"))
        # Other accounts are not affected.
        await api.register("grace@example.com")
        assert (await login_from("203.0.113.7", "grace@example.com", "correct-horse")).is_success

    async def test_an_unknown_account_is_throttled_alike(
        self, api: Any, app: FastAPI, login_from: Any
    ) -> None:
        await api.register()
        limit = app.state.settings.login_failures_per_account
        answers = {}
        for email in ("ada@example.com", "nobody@example.com"):
            for n in range(limit):
                assert_problem(await login_from(f"198.51.100.{n + 1}", email, "wrong-guess"), 401)
            response = await login_from("203.0.113.7", email, "wrong-guess")
            assert_throttled(response)
            problem = response.json()
            answers[email] = (problem["title"], problem["detail"].split(";")[0])
        assert answers["ada@example.com"] == answers["nobody@example.com"]

    async def test_a_success_does_not_reset_the_attackers_window(
        self, api: Any, app: FastAPI, login_from: Any
    ) -> None:
        await api.register()
        limit = app.state.settings.login_failures_per_account
        for _ in range(limit - 1):
            assert_problem(await login_from("198.51.100.9", "ada@example.com", "guess"), 401)
        # The owner logs in from home in between.
        assert (await login_from("192.0.2.10", "ada@example.com", "correct-horse")).is_success

        assert_problem(await login_from("198.51.100.9", "ada@example.com", "guess"), 401)
        assert_throttled(await login_from("198.51.100.9", "ada@example.com", "guess"))


class TestPerAddress:
    async def test_one_address_guessing_many_accounts_is_stopped(
        self, api: Any, app: FastAPI, login_from: Any
    ) -> None:
        await api.register()
        limit = app.state.settings.login_failures_per_address
        for n in range(limit):
            response = await login_from("198.51.100.66", f"user{n}@example.com", "123456")
            assert_problem(response, 401)

        assert_throttled(await login_from("198.51.100.66", "ada@example.com", "correct-horse"))
        # The account itself is fine from anywhere else.
        assert (await login_from("192.0.2.10", "ada@example.com", "correct-horse")).is_success


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def throttle(url: str) -> LoginThrottle:
    return LoginThrottle(
        counter_storage(url), failures_per_account=3, failures_per_address=100, window_seconds=60
    )


class TestInRedis:
    async def test_replicas_share_the_counts(self, redis_url: str) -> None:
        first, second = throttle(redis_url), throttle(redis_url)
        await first.storage.reset()
        for _ in range(2):
            await first.record_failure("ada@example.com", "198.51.100.1")
        await second.record_failure("ADA@example.com", "198.51.100.2")

        for replica in (first, second):
            with pytest.raises(LoginThrottled) as caught:
                await replica.check("ada@example.com", "203.0.113.7")
            assert 1 <= int(caught.value.headers["Retry-After"]) <= 60

    async def test_a_redis_that_is_down_lets_logins_through(self, unused_tcp_port: int) -> None:
        down = throttle(f"redis://127.0.0.1:{unused_tcp_port}/0")
        for _ in range(5):
            await down.record_failure("ada@example.com", "198.51.100.1")
        await down.check("ada@example.com", "198.51.100.1")
