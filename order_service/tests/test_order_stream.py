"""GET /v1/orders/{id}/stream: the status at once, each change after it whichever
replica made it, keep-alive comments, the end after a final status, and nothing kept
once the client is gone."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service_testing import assert_problem, eventually

if TYPE_CHECKING:
    from conftest import Customer, PlaceOrder, Server, Shop


@pytest.fixture
async def confirmed(place_order: PlaceOrder, shop: Shop) -> dict[str, Any]:
    product = await shop.product(stock=10)
    order: dict[str, Any] = (await place_order((product, 1))).json()
    assert order["status"] == "confirmed"
    return order


class Stream:
    """An open event stream, read line by line (what `curl -N` shows)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next_event(self, within: float = 1.0) -> dict[str, Any]:
        """The next `status` event's data (comments skipped)."""
        event: dict[str, str] = {}
        async with asyncio.timeout(within):
            async for line in self.lines:
                if line.startswith(":"):
                    continue
                if not line:
                    if event:
                        break
                    continue
                name, _, value = line.partition(":")
                event[name] = value.strip()
        assert event.get("event") == "status", event
        data: dict[str, Any] = json.loads(event["data"])
        return data

    async def next_comment(self, within: float) -> str:
        async with asyncio.timeout(within):
            async for line in self.lines:
                if line.startswith(":"):
                    return line
        raise AssertionError("the stream ended without a comment")

    async def ended(self, within: float = 1.0) -> bool:
        async with asyncio.timeout(within):
            async for line in self.lines:
                assert line.startswith(":") or not line, f"more came: {line}"
        return True


@pytest.fixture
async def open_stream(
    order_servers: tuple[Server, Server],
) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []
    responses: list[httpx.Response] = []

    async def open_(order_id: str, headers: dict[str, str], server: int = 0) -> Stream:
        client = httpx.AsyncClient(base_url=order_servers[server].url, timeout=10)
        clients.append(client)
        request = client.build_request("GET", f"/v1/orders/{order_id}/stream", headers=headers)
        response = await client.send(request, stream=True)
        responses.append(response)
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return Stream(response)

    yield open_
    for response in responses:
        await response.aclose()
    for client in clients:
        await client.aclose()


class TestOrderStream:
    async def test_status_at_once_then_each_change_until_delivered(
        self,
        confirmed: dict[str, Any],
        customer: Customer,
        admin: dict[str, str],
        open_stream: Any,
        order_servers: tuple[Server, Server],
    ) -> None:
        started = time.monotonic()
        stream = await open_stream(confirmed["id"], customer.auth)

        first = await stream.next_event()
        assert time.monotonic() - started < 1.0
        assert first["status"] == "confirmed"
        assert first["cancel_reason"] is None
        assert first["refunded_amount"] == "0.00"
        async with httpx.AsyncClient(base_url=order_servers[0].url) as replica:
            for action, status in (("ship", "shipped"), ("deliver", "delivered")):
                changed = time.monotonic()
                response = await replica.post(
                    f"/v1/orders/{confirmed['id']}/{action}", headers=admin
                )
                assert response.status_code == 200, response.text
                event = await stream.next_event(within=1.0)
                assert event["status"] == status
                assert time.monotonic() - changed < 1.0
        assert await stream.ended()

    async def test_a_change_made_by_another_replica_arrives(
        self,
        confirmed: dict[str, Any],
        customer: Customer,
        open_stream: Any,
        order_servers: tuple[Server, Server],
    ) -> None:
        stream = await open_stream(confirmed["id"], customer.auth, server=0)
        assert (await stream.next_event())["status"] == "confirmed"

        async with httpx.AsyncClient(base_url=order_servers[1].url) as other:
            response = await other.post(
                f"/v1/orders/{confirmed['id']}/cancel", headers=customer.auth
            )
        assert response.status_code == 200, response.text

        event = await stream.next_event(within=1.0)
        assert (event["status"], event["cancel_reason"]) == ("cancelled", "cancelled_by_user")
        assert await stream.ended()

    async def test_a_final_order_is_one_event_and_the_end(
        self,
        confirmed: dict[str, Any],
        customer: Customer,
        client: httpx.AsyncClient,
        open_stream: Any,
    ) -> None:
        await client.post(f"/v1/orders/{confirmed['id']}/cancel", headers=customer.auth)
        stream = await open_stream(confirmed["id"], customer.auth)
        assert (await stream.next_event())["status"] == "cancelled"
        assert await stream.ended()

    async def test_keep_alive_comments(
        self, confirmed: dict[str, Any], admin: dict[str, str], open_stream: Any
    ) -> None:
        stream = await open_stream(confirmed["id"], admin)
        await stream.next_event()
        # The servers here ping every second (at most 15 s in production).
        assert (await stream.next_comment(within=2.5)).startswith(":")

    async def test_only_the_owner_or_an_administrator(
        self,
        confirmed: dict[str, Any],
        make_customer: Any,
        order_servers: tuple[Server, Server],
    ) -> None:
        async with httpx.AsyncClient(base_url=order_servers[0].url) as client:
            url = f"/v1/orders/{confirmed['id']}/stream"
            assert_problem(await client.get(url, headers=make_customer().auth), 404)
            assert_problem(await client.get(url), 401)
            response = await client.get("/v1/orders/x/stream", headers=make_customer().auth)
            assert_problem(response, 422)

    async def test_a_client_that_leaves_is_forgotten(
        self,
        confirmed: dict[str, Any],
        customer: Customer,
        order_servers: tuple[Server, Server],
    ) -> None:
        watch = order_servers[0].app.state.status_watch
        async with httpx.AsyncClient(base_url=order_servers[0].url) as client:
            url = f"/v1/orders/{confirmed['id']}/stream"
            async with client.stream("GET", url, headers=customer.auth) as response:
                assert response.status_code == 200
                await anext(response.aiter_lines())
                assert watch._watchers
        await eventually(lambda: not watch._watchers, within=2)
