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

#: The answers the contract names for each route (the contract's table, and 403 wherever
#: only administrators may call), besides the 401, 422, 429, 503 and 504 any may give.
CONTRACT_ANSWERS = {
    ("post", "/api/v1/auth/register"): {"201", "409", "422"},
    ("post", "/api/v1/auth/token"): {"200", "401", "429"},
    ("post", "/api/v1/auth/refresh"): {"200", "401"},
    ("get", "/api/v1/users"): {"200", "403"},
    ("get", "/api/v1/users/{}"): {"200", "403", "404"},
    ("patch", "/api/v1/users/{}"): {"200", "403", "404", "409"},
    ("post", "/api/v1/products"): {"201", "403", "409"},
    ("get", "/api/v1/products/{}"): {"200", "404"},
    ("patch", "/api/v1/products/{}"): {"200", "403", "404", "409"},
    ("delete", "/api/v1/products/{}"): {"204", "403", "404"},
    ("get", "/api/v1/inventory/{}"): {"200", "404"},
    ("put", "/api/v1/inventory/{}"): {"200", "403", "404"},
    ("post", "/api/v1/orders"): {"201", "400", "409", "422"},
    ("get", "/api/v1/orders/{}"): {"200", "404"},
    ("post", "/api/v1/orders/{}/cancel"): {"200", "404", "409"},
    ("post", "/api/v1/orders/{}/ship"): {"200", "403", "404", "409"},
    ("post", "/api/v1/orders/{}/deliver"): {"200", "403", "404", "409"},
    ("get", "/api/v1/orders/{}/timeline"): {"200", "404"},
    ("get", "/api/v1/orders/{}/stream"): {"200", "404"},
    ("post", "/api/v1/orders/{}/refunds"): {"201", "400", "403", "404", "409", "422"},
    ("get", "/api/v1/orders/{}/refunds"): {"200", "404"},
    ("put", "/api/v1/cart/items/{}"): {"200", "409", "422"},
    ("post", "/api/v1/cart/checkout"): {"201", "400", "409", "422"},
    ("post", "/api/v1/webhooks"): {"201", "403", "422"},
    ("get", "/api/v1/webhooks"): {"200", "403"},
    ("get", "/api/v1/webhooks/{}"): {"200", "403", "404"},
    ("patch", "/api/v1/webhooks/{}"): {"200", "403", "404"},
    ("delete", "/api/v1/webhooks/{}"): {"204", "403", "404"},
    ("get", "/api/v1/webhooks/{}/deliveries"): {"200", "403", "404"},
    ("post", "/api/v1/webhooks/{}/deliveries/{}/retry"): {"202", "403", "404"},
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
            if {"bearerAuth": []} in operation.get("security", []):
                assert "401" in operation["responses"], key  # a token sent must be valid
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
        [header] = [p for p in found[key]["parameters"] if p["in"] == "header"]
        assert header["name"].lower() == "idempotency-key", key
        assert header["required"] is True, key  # 400 without it
    stream = found["get", "/api/v1/orders/{}/stream"]["responses"]["200"]
    assert "text/event-stream" in stream["content"]


async def test_each_route_documents_the_answers_it_gives(gateway: httpx.AsyncClient) -> None:
    found = operations((await gateway.get("/openapi.json")).json())
    for key, statuses in CONTRACT_ANSWERS.items():
        assert statuses - found[key]["responses"].keys() == set(), key
    for key in CONTRACT_ROUTES:
        responses, body = found[key]["responses"], found[key].get("requestBody")
        if key != ("get", "/health"):
            assert "400" in responses, key  # a path the gateway does not let through
        if body is not None:
            assert "413" in responses, key  # over the size limit
            if "application/json" in body["content"]:
                assert "not valid JSON" in responses["400"]["description"], key
    # Only routes for administrators say 403.
    admin_only = {key for key, statuses in CONTRACT_ANSWERS.items() if "403" in statuses}
    assert {key for key in CONTRACT_ROUTES if "403" in found[key]["responses"]} == admin_only
