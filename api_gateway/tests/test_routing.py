"""Which service a request reaches, and which requests reach none."""

from __future__ import annotations

import json

import pytest

from service_testing import assert_problem


class TestPrefixMapping:
    @pytest.mark.parametrize(
        ("path", "service", "upstream_path"),
        [
            ("/api/v1/auth/jwks", "user", "/v1/auth/jwks"),
            ("/api/v1/users/me", "user", "/v1/users/me"),
            ("/api/v1/products", "product", "/v1/products"),
            ("/api/v1/products/3f0c", "product", "/v1/products/3f0c"),
            ("/api/v1/orders/1/cancel", "order", "/v1/orders/1/cancel"),
            ("/api/v1/inventory/42", "inventory", "/v1/inventory/42"),
            ("/api/v1/notifications", "notification", "/v1/notifications"),
            ("/api/v1/webhooks/abc/deliveries", "notification", "/v1/webhooks/abc/deliveries"),
        ],
    )
    async def test_resource_goes_to_its_service(
        self, gateway, tokens, path, service, upstream_path
    ) -> None:
        response = await gateway.get(path, headers=tokens.headers())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["service"] == service
        assert body["path"] == upstream_path

    async def test_query_string_is_passed_unchanged(self, gateway) -> None:
        query = "q=red%20shoes&category=a&category=b&empty=&accent=%C3%A9&plus=a+b"
        response = await gateway.get(f"/api/v1/products?{query}")
        assert response.json()["query"] == query

    async def test_percent_encoded_id_is_passed_as_sent(self, gateway) -> None:
        response = await gateway.get("/api/v1/products/caf%C3%A9")
        assert response.json()["raw_path"] == "/v1/products/caf%C3%A9"

    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def test_every_method_is_forwarded(self, gateway, tokens, method) -> None:
        response = await gateway.request(method, "/api/v1/orders/1", headers=tokens.headers())
        assert response.json()["method"] == method

    async def test_head_is_forwarded_without_a_body(self, gateway) -> None:
        response = await gateway.head("/api/v1/products/1")
        assert response.status_code == 200
        assert response.content == b""
        assert int(response.headers["content-length"]) > 0

    async def test_redirect_points_at_the_gateway(self, gateway) -> None:
        response = await gateway.get("/api/v1/products/redirect")
        assert response.status_code == 307
        assert response.headers["location"] == "/api/v1/products/elsewhere"

    async def test_upstream_error_passes_through(self, gateway, tokens) -> None:
        response = await gateway.get("/api/v1/products/status/404", headers=tokens.headers())
        assert response.status_code == 404
        assert response.json() == {"status": "as asked"}


class TestUnroutable:
    @pytest.mark.parametrize(
        "path",
        [
            "/internal/v1/users/1/status",
            "/api/v1/internal/users/1/status",
            "/api/internal/v1/users",
            "/api/v2/products",
            "/api/v1/payments",
            "/api/v1/",
            "/api/v1",
            "/api",
            "/v1/products",
            "/api/v1//products",
        ],
    )
    async def test_404_problem(self, gateway, upstreams, path) -> None:
        response = await gateway.get(path)
        assert_problem(response, 404)
        assert all(not up.requests for up in upstreams.values())


class TestTraversal:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/v1/users/%2e%2e/internal/x",
            "/api/v1/users/%2E%2E/internal/x",
            "/api/v1/users/%2E.%2Finternal",
            "/api/v1/users/%2E%2E%2Finternal",
            "/api/v1/users/..%2finternal",
            "/api/v1/users/..%5cinternal",
            "/api/v1/users/%252e%252e/internal",
            "/api/v1/users/%25252e%25252e/internal",
            "/api/v1/products/%2e",
            "/api/v1/products/a%00b",
        ],
    )
    async def test_encoded_traversal_is_refused(self, gateway, upstreams, path) -> None:
        response = await gateway.get(path)
        assert response.status_code in (400, 404)
        assert_problem(response, response.status_code)
        assert all(not up.requests for up in upstreams.values())

    @pytest.mark.parametrize(
        "raw_path",
        [
            b"/api/v1/users/../internal/x",
            b"/api/v1/products/../../../internal/v1/users",
            b"/api/v1/products/./1",
            b"/api/v1/users/..\\internal",
            b"/api/v1/users/%2e%2e/internal",
        ],
    )
    async def test_literal_traversal_is_refused(
        self, gateway, upstreams, raw_request, raw_path
    ) -> None:
        status, headers, body = await raw_request(gateway.app, "GET", raw_path)
        assert status in (400, 404)
        assert headers["content-type"] == "application/problem+json"
        problem = json.loads(body)
        assert problem["status"] == status
        assert problem["request_id"] == headers["x-request-id"]
        assert all(not up.requests for up in upstreams.values())
