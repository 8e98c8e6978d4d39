"""Token status lookups: cached briefly, and one lookup shared by concurrent requests."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from shared.auth import RemoteUserStatus, UserStatus
from shared.http import ServiceClient


class UserServiceDouble:
    """user_service's status route over an in-memory transport: counts calls, answers
    after `delay` seconds with `status` (or that HTTP status code)."""

    def __init__(self, *, delay: float = 0.05, code: int = 200) -> None:
        self.delay = delay
        self.code = code
        self.calls: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        await asyncio.sleep(self.delay)
        if self.code != 200:
            return httpx.Response(self.code, json={"status": self.code})
        return httpx.Response(200, json={"is_active": True, "role": "customer"})

    def client(self) -> ServiceClient:
        return ServiceClient(
            {"user": "http://user.test"}, retries=0, custom_transport=httpx.MockTransport(self)
        )


async def test_concurrent_requests_of_one_user_share_one_lookup() -> None:
    upstream = UserServiceDouble()
    users = RemoteUserStatus(upstream.client())
    user_id = uuid.uuid4()

    answers = await asyncio.gather(*(users.get_status(user_id) for _ in range(32)))

    assert answers == [UserStatus(is_active=True, role="customer")] * 32
    assert upstream.calls == [f"/internal/v1/users/{user_id}/status"]
    # Then cached: no further call.
    await users.get_status(user_id)
    assert len(upstream.calls) == 1


async def test_each_user_is_looked_up_on_their_own() -> None:
    upstream = UserServiceDouble()
    users = RemoteUserStatus(upstream.client())
    ids = [uuid.uuid4() for _ in range(3)]

    await asyncio.gather(*(users.get_status(user_id) for user_id in ids * 4))

    assert sorted(upstream.calls) == sorted(f"/internal/v1/users/{i}/status" for i in ids)


async def test_a_failed_lookup_fails_its_waiters_and_is_not_cached() -> None:
    upstream = UserServiceDouble(code=500)
    users = RemoteUserStatus(upstream.client())
    user_id = uuid.uuid4()

    results = await asyncio.gather(
        *(users.get_status(user_id) for _ in range(5)), return_exceptions=True
    )

    assert all(isinstance(result, httpx.HTTPStatusError) for result in results)
    assert len(upstream.calls) == 1
    upstream.code = 200
    assert await users.get_status(user_id) == UserStatus(is_active=True, role="customer")
    assert len(upstream.calls) == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others_lookup() -> None:
    upstream = UserServiceDouble(delay=0.2)
    users = RemoteUserStatus(upstream.client())
    user_id = uuid.uuid4()

    leaving = asyncio.create_task(users.get_status(user_id))
    staying = asyncio.create_task(users.get_status(user_id))
    await asyncio.sleep(0.05)
    leaving.cancel()

    assert await staying == UserStatus(is_active=True, role="customer")
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert len(upstream.calls) == 1
