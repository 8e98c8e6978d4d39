"""A customer's and an administrator's journeys through the real gateway."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from service_testing import assert_problem

pytestmark = pytest.mark.e2e


def unique_email() -> str:
    return f"shopper-{uuid.uuid4().hex[:10]}@example.com"


class TestCustomerJourney:
    async def test_register_token_profile_and_browse(
        self, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        email = unique_email()
        user = await shop.register(email)
        headers = await shop.headers(email)
        me = await gateway.get("/api/v1/users/me", headers=headers)
        assert me.status_code == 200
        assert me.json()["id"] == user["id"]

        page = (await gateway.get("/api/v1/products", params={"limit": 5})).json()
        assert page["limit"] == 5
        assert page["total"] >= 10, "the demo catalog is seeded"
        product = page["items"][0]
        assert isinstance(product["price"], str)
        detail = await gateway.get(f"/api/v1/products/{product['id']}")
        assert detail.status_code == 200
        assert detail.json() == product

    async def test_refresh_rotates_through_the_gateway(
        self, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        email = unique_email()
        await shop.register(email)
        tokens = await shop.login(email)
        first = await gateway.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert first.status_code == 200
        again = await gateway.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_problem(again, 401)

    async def test_search_finds_seeded_products(self, gateway: httpx.AsyncClient) -> None:
        everything = (await gateway.get("/api/v1/products", params={"limit": 100})).json()["items"]
        category = everything[0]["category"]
        page = (await gateway.get("/api/v1/products", params={"category": category})).json()
        assert page["items"]
        assert all(item["category"] == category for item in page["items"])


class TestAdministratorJourney:
    async def test_manages_the_catalog(self, shop: Any, gateway: httpx.AsyncClient) -> None:
        admin = await shop.admin_headers()
        sku = f"E2E-{uuid.uuid4().hex[:8]}"
        created = await gateway.post(
            "/api/v1/products",
            json={"sku": sku, "name": "E2E Lamp", "price": "19.90", "category": "lighting"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        product = created.json()
        assert product["price"] == "19.90"
        duplicate = await gateway.post(
            "/api/v1/products",
            json={"sku": sku, "name": "Again", "price": "1.00", "category": "lighting"},
            headers=admin,
        )
        assert_problem(duplicate, 409)
        patched = await gateway.patch(
            f"/api/v1/products/{product['id']}", json={"price": "17.50"}, headers=admin
        )
        assert patched.json()["price"] == "17.50"
        deleted = await gateway.delete(f"/api/v1/products/{product['id']}", headers=admin)
        assert deleted.status_code == 204
        assert_problem(await gateway.get(f"/api/v1/products/{product['id']}"), 404)

    async def test_customers_cannot_manage_the_catalog(
        self, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        email = unique_email()
        await shop.register(email)
        response = await gateway.post(
            "/api/v1/products",
            json={"sku": "NOPE-1", "name": "Nope", "price": "1.00", "category": "x"},
            headers=await shop.headers(email),
        )
        assert_problem(response, 403)

    async def test_deactivated_users_token_stops_working(
        self, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        email = unique_email()
        user = await shop.register(email)
        headers = await shop.headers(email)
        assert (await gateway.get("/api/v1/users/me", headers=headers)).status_code == 200
        response = await gateway.patch(
            f"/api/v1/users/{user['id']}",
            json={"is_active": False},
            headers=await shop.admin_headers(),
        )
        assert response.status_code == 200
        assert_problem(await gateway.get("/api/v1/users/me", headers=headers), 401)


class TestEdge:
    async def test_request_id_round_trip(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/products", headers={"X-Request-ID": "e2e-trace-42"})
        assert response.headers["x-request-id"] == "e2e-trace-42"
        missing = await gateway.get(
            "/api/v1/products/not-a-uuid", headers={"X-Request-ID": "e2e-43"}
        )
        assert assert_problem(missing, 422)["request_id"] == "e2e-43"

    async def test_health_aggregates_the_services(self, gateway: httpx.AsyncClient) -> None:
        body = (await gateway.get("/health")).json()
        assert body["status"] == "healthy"
        assert body["services"]["user_service"] == "healthy"
        assert body["services"]["product_service"] == "healthy"

    @pytest.mark.parametrize(
        ("method", "path", "kwargs", "status"),
        [
            (
                "POST",
                "/api/v1/auth/register",
                {"content": b"{not json", "headers": {"content-type": "application/json"}},
                422,
            ),
            (
                "POST",
                "/api/v1/auth/register",
                {
                    "json": {
                        "email": "x@example.com",
                        "password": "long-enough",
                        "full_name": "X",
                        "role": "admin",
                    }
                },
                422,
            ),
            (
                "POST",
                "/api/v1/auth/register",
                {"json": {"email": 5, "password": [], "full_name": {}}},
                422,
            ),
            (
                "POST",
                "/api/v1/auth/register",
                {
                    "content": b"{" + b" " * (1024 * 1024 + 10) + b"}",
                    "headers": {"content-type": "application/json"},
                },
                413,
            ),
            ("GET", "/api/v1/products?limit=100000", {}, 422),
            ("GET", "/api/v1/products/not-a-uuid", {}, 422),
            (
                "GET",
                "/api/v1/users/me",
                {"headers": {"Authorization": "Bearer " + "a" * 100_000}},
                None,
            ),
            (
                "GET",
                "/api/v1/users/me",
                {"headers": {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}},
                401,
            ),
            ("GET", "/api/v1/users/../internal/x", {}, None),
            ("GET", "/api/v1/users/%2e%2e/internal/x", {}, None),
            ("GET", "/api/v1/products/%2E%2E%2F%2E%2E%2Finternal", {}, None),
            ("GET", "/internal/v1/users/x/status", {}, 404),
            ("GET", "/api/v1/nothing-here", {}, 404),
        ],
    )
    async def test_bad_input_is_a_clear_4xx(
        self, stack: Any, method: str, path: str, kwargs: dict[str, Any], status: int | None
    ) -> None:
        # A raw client, so that no path is normalised before it reaches the gateway.
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
            request = client.build_request(method, path, **kwargs)
            request.url = request.url.copy_with(raw_path=path.encode())
            response = await client.send(request)
        if status is None:
            assert 400 <= response.status_code < 500, response.text
            if response.headers.get("content-type", "").startswith("application/problem+json"):
                assert response.json()["status"] == response.status_code
        else:
            assert_problem(response, status)
