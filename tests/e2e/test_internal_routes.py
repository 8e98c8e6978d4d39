"""Every `/internal` route, reached directly on its service's port (not through the
gateway, which never routes them): no credential or a user's token is a 401, another
service's credential a 403, and only the services that need a route are served."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from devstack import Stack
from service_testing import assert_problem, eventually, service_headers
from shared.service_auth import SERVICE_NAMES

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = pytest.mark.e2e

ANY_ID = "00000000-0000-4000-8000-000000000001"
EVERY_OTHER = tuple(name for name in SERVICE_NAMES if name != "user_service")
#: (service, method, path as in its OpenAPI document, who may call it).
ROUTES = [
    ("user_service", "GET", "/internal/v1/users/{user_id}/status", EVERY_OTHER),
    ("product_service", "GET", "/internal/v1/products", ("order_service", "inventory_service")),
    ("inventory_service", "POST", "/internal/v1/reservations", ("order_service",)),
    ("inventory_service", "GET", "/internal/v1/reservations/{order_id}", ("order_service",)),
    (
        "inventory_service",
        "POST",
        "/internal/v1/reservations/{order_id}/commit",
        ("order_service",),
    ),
    (
        "inventory_service",
        "POST",
        "/internal/v1/reservations/{order_id}/release",
        ("order_service",),
    ),
    ("inventory_service", "GET", "/internal/v1/stock", ("order_service",)),
]


def concrete(path: str) -> str:
    return path.replace("{user_id}", ANY_ID).replace("{order_id}", ANY_ID) + f"?ids={ANY_ID}"


async def test_the_table_lists_every_internal_route(stack: Stack) -> None:
    """What the services serve under /internal, read from their own documents: a new
    internal route shows up here until it is listed (and so tested) above."""
    served = set()
    async with httpx.AsyncClient(timeout=10) as client:
        for spec in (name for name in SERVICE_NAMES if name != "api_gateway"):
            document = (await client.get(f"{stack.url(spec)}/openapi.json")).json()
            for path, operations in document["paths"].items():
                if path.startswith("/internal"):
                    served |= {(spec, method.upper(), path) for method in operations}
    assert served == {(service, method, path) for service, method, path, _ in ROUTES}


@pytest.mark.parametrize(("service", "method", "path", "callers"), ROUTES)
async def test_each_route_answers_its_callers_only(
    stack: Stack,
    shop: Shop,
    service: str,
    method: str,
    path: str,
    callers: tuple[str, ...],
) -> None:
    url = stack.url(service) + concrete(path)
    body = {"order_id": ANY_ID, "items": []} if path.endswith("reservations") else None
    async with httpx.AsyncClient(timeout=10) as client:

        async def call(headers: dict[str, str]) -> httpx.Response:
            return await client.request(method, url, json=body, headers=headers)

        assert_problem(await call({}), 401)
        assert_problem(await call(await shop.admin_headers()), 401)
        for caller in SERVICE_NAMES:
            response = await call(service_headers(caller, service))
            if caller in callers:
                assert response.status_code not in (401, 403), (caller, response.text)
            else:
                assert_problem(response, 403)


async def test_a_confirmed_orders_stock_cannot_be_released_from_the_network(
    stack: Stack, shop: Shop, gateway: httpx.AsyncClient
) -> None:
    """The defect found: one POST to inventory's release route, from anywhere on the
    network, put a confirmed order's sold units back on sale."""
    admin = await shop.admin_headers()
    created = await gateway.post(
        "/api/v1/products",
        json={
            "sku": f"INT-{uuid.uuid4().hex[:10]}",
            "name": "Kept",
            "price": "9.50",
            "category": "misc",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]
    stocked = await gateway.put(
        f"/api/v1/inventory/{product_id}", json={"available": 5}, headers=admin
    )
    assert stocked.status_code in (200, 201), stocked.text
    email = f"internal-{uuid.uuid4().hex[:10]}@example.com"
    await shop.register(email)
    customer = await shop.headers(email)
    order = await gateway.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product_id, "quantity": 2}], "payment_token": "tok_ok"},
        headers={**customer, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert order.status_code == 201, order.text
    assert order.json()["status"] == "confirmed"
    order_id = order.json()["id"]

    async def stock() -> tuple[int, int]:
        body = (await gateway.get(f"/api/v1/inventory/{product_id}")).json()
        return body["available"], body["reserved"]

    async def sold() -> bool:
        return await stock() == (3, 0)

    await eventually(sold, message="the order's units were never committed")
    release = f"{stack.url('inventory_service')}/internal/v1/reservations/{order_id}/release"
    attempts = [
        ({}, 401),
        (customer, 401),
        (admin, 401),
        (service_headers("notification_service", "inventory_service"), 403),
        (service_headers("api_gateway", "inventory_service"), 403),
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for headers, status in attempts:
            response = await client.post(
                release, json={"reason": "cancelled_by_user"}, headers=headers
            )
            assert_problem(response, status)

    assert await stock() == (3, 0)
    read = await gateway.get(f"/api/v1/orders/{order_id}", headers=customer)
    assert read.json()["status"] == "confirmed"
