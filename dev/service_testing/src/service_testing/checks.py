"""Assertions the services' tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], object], *, within: float = 15.0, message: str = ""
) -> None:
    """Wait until `check()` (a value or an awaitable) is truthy; raise AssertionError
    after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(message or f"not true within {within} s")
        await asyncio.sleep(0.05)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Assert `response` (an httpx.Response) is an RFC 9457 problem document with `status`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"], body
    assert body["type"], body
    assert body["detail"], body
    assert body["request_id"] == response.headers["x-request-id"]
    return body
