"""The gateway's `/openapi.json` built from the real services: every route of the
contract is in it, under its public path, and nothing else."""

from __future__ import annotations

import re

import httpx
import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.e2e

#: Every public route of the contract (shared CONTRACT.md), path parameters unnamed.
CONTRACT_ROUTES = {
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/refresh"),
    ("get", "/api/v1/auth/jwks"),
    ("get", "/api/v1/users/me"),
    ("patch", "/api/v1/users/me"),
    ("get", "/api/v1/users"),
    ("get", "/api/v1/users/{}"),
    ("patch", "/api/v1/users/{}"),
    ("get", "/api/v1/products"),
    ("post", "/api/v1/products"),
    ("get", "/api/v1/products/{}"),
    ("patch", "/api/v1/products/{}"),
    ("delete", "/api/v1/products/{}"),
    ("get", "/api/v1/inventory/{}"),
    ("put", "/api/v1/inventory/{}"),
    ("post", "/api/v1/orders"),
    ("get", "/api/v1/orders"),
    ("get", "/api/v1/orders/{}"),
    ("post", "/api/v1/orders/{}/cancel"),
    ("post", "/api/v1/orders/{}/ship"),
    ("post", "/api/v1/orders/{}/deliver"),
    ("get", "/api/v1/orders/{}/timeline"),
    ("get", "/api/v1/orders/{}/stream"),
    ("post", "/api/v1/orders/{}/refunds"),
    ("get", "/api/v1/orders/{}/refunds"),
    ("get", "/api/v1/cart"),
    ("put", "/api/v1/cart/items/{}"),
    ("delete", "/api/v1/cart/items/{}"),
    ("delete", "/api/v1/cart"),
    ("post", "/api/v1/cart/checkout"),
    ("get", "/api/v1/notifications"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{}"),
    ("patch", "/api/v1/webhooks/{}"),
    ("delete", "/api/v1/webhooks/{}"),
    ("get", "/api/v1/webhooks/{}/deliveries"),
    ("post", "/api/v1/webhooks/{}/deliveries/{}/retry"),
    ("get", "/health"),
}
#: Anyone may call these; every other route needs a bearer token.
PUBLIC = {
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/refresh"),
    ("get", "/api/v1/auth/jwks"),
    ("get", "/api/v1/products"),
    ("get", "/api/v1/products/{}"),
    ("get", "/api/v1/inventory/{}"),
    ("get", "/health"),
}
#: The routes that take an Idempotency-Key header.
KEYED = {
    ("post", "/api/v1/orders"),
    ("post", "/api/v1/cart/checkout"),
    ("post", "/api/v1/orders/{}/refunds"),
}


def operations(document: dict) -> dict[tuple[str, str], dict]:
    found = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            found[method, re.sub(r"\{[^}]+\}", "{}", path)] = operation
    return found


async def test_every_contract_route_is_documented(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)  # a valid OpenAPI 3.1 document
    assert document["x-missing-services"] == []
    found = operations(document)
    assert CONTRACT_ROUTES - found.keys() == set()
    # Only public paths (the gateway's own `/health` aside): nothing internal, no health.
    assert [p for p in document["paths"] if not p.startswith("/api/v1/")] == ["/health"]
    assert not [path for path in document["paths"] if "internal" in path]


async def test_security_and_problem_answers(gateway: httpx.AsyncClient) -> None:
    found = operations((await gateway.get("/openapi.json")).json())
    for key in CONTRACT_ROUTES:
        operation = found[key]
        if key in PUBLIC:
            assert {"bearerAuth": []} not in operation.get("security", [{}])[:1], key
        else:
            assert operation["security"] == [{"bearerAuth": []}], key
            assert "401" in operation["responses"], key
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        assert errors, key
        if key == ("get", "/health"):
            continue  # its 503 is the health report itself, which names what is down
        for answer in errors.values():
            assert "application/problem+json" in answer["content"], key


async def test_keyed_routes_and_the_stream_say_so(gateway: httpx.AsyncClient) -> None:
    found = operations((await gateway.get("/openapi.json")).json())
    for key in KEYED:
        headers = {p["name"].lower() for p in found[key]["parameters"] if p["in"] == "header"}
        assert "idempotency-key" in headers, key
    stream = found["get", "/api/v1/orders/{}/stream"]["responses"]["200"]
    assert "text/event-stream" in stream["content"]
