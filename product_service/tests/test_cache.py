"""The public product document is served from memory, and writes are seen at once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from prometheus_client import REGISTRY

from product_service.cached_reads import anonymous_product_read
from service_testing import assert_problem

ROUTE = "/v1/products/{product_id}"


def cache_hits(app: FastAPI) -> float:
    from product_service.cache import CACHE_LOOKUPS

    return CACHE_LOOKUPS.labels("hit")._value.get()


def cache_misses() -> float:
    return REGISTRY.get_sample_value("product_cache_lookups_total", {"result": "miss"}) or 0.0


def served(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


class TestProductCache:
    async def test_second_read_comes_from_the_cache(
        self, app: FastAPI, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        first = await client.get(f"/v1/products/{product['id']}")
        hits = cache_hits(app)
        second = await client.get(f"/v1/products/{product['id']}")
        assert cache_hits(app) == hits + 1
        assert second.json() == first.json() == product

    async def test_an_update_is_visible_at_once(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        patched = await client.patch(
            f"/v1/products/{product['id']}", json={"price": "3.21"}, headers=admin
        )
        assert patched.status_code == 200
        assert (await client.get(f"/v1/products/{product['id']}")).json()["price"] == "3.21"

    async def test_a_deactivated_product_is_gone_at_once(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        await client.delete(f"/v1/products/{product['id']}", headers=admin)
        assert_problem(await client.get(f"/v1/products/{product['id']}"), 404)

    async def test_administrators_read_past_the_cache(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        await client.delete(f"/v1/products/{product['id']}", headers=admin)
        response = await client.get(f"/v1/products/{product['id']}", headers=admin)
        assert response.json()["is_active"] is False


class TestSharedCaching:
    """A cached document's answer lets a shared cache in front (the gateway's) keep it
    for as long as this cache does, and no longer."""

    async def test_an_anonymous_read_may_be_shared_for_the_seconds_left(
        self, app: FastAPI, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        ttl = app.state.settings.product_cache_seconds
        routed = await client.get(f"/v1/products/{product['id']}")
        cached = await client.get(f"/v1/products/{product['id']}")
        for response in (routed, cached):
            visibility, max_age = response.headers["cache-control"].split(", ")
            assert visibility == "public"
            assert 0 <= int(max_age.removeprefix("max-age=")) <= ttl
        # Whole seconds, rounded down: never longer than this cache keeps it.
        assert routed.headers["cache-control"] in {
            f"public, max-age={int(ttl)}",
            f"public, max-age={int(ttl) - 1}",
        }

    async def test_an_inactive_product_is_not_shared(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.delete(f"/v1/products/{product['id']}", headers=admin)
        response = await client.get(f"/v1/products/{product['id']}", headers=admin)
        assert response.status_code == 200
        assert "cache-control" not in response.headers

    async def test_with_the_cache_off_nothing_is_shared(
        self, app: FastAPI, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        cache = app.state.product_cache
        ttl, cache.ttl_seconds = cache.ttl_seconds, 0
        try:
            response = await client.get(f"/v1/products/{product['id']}")
        finally:
            cache.ttl_seconds = ttl
        assert response.status_code == 200
        assert "cache-control" not in response.headers


class TestCachedReads:
    """A cached product's anonymous read is answered before the framework routes it, with
    what the route itself answers."""

    async def test_same_answer_as_the_route_with_request_id_and_metrics(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        routed = await client.get(f"/v1/products/{product['id']}")
        count = served(ROUTE, "200")

        cached = await client.get(
            f"/v1/products/{product['id']}", headers={"X-Request-ID": "read-1"}
        )

        assert cached.status_code == 200
        assert cached.content == routed.content
        assert cached.headers["content-type"] == routed.headers["content-type"]
        assert cached.headers["content-length"] == routed.headers["content-length"]
        assert cached.headers["cache-control"].startswith("public, max-age=")
        assert cached.headers["x-request-id"] == "read-1"
        assert served(ROUTE, "200") == count + 1

    async def test_a_miss_is_counted_once(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        misses = cache_misses()
        await client.get(f"/v1/products/{product['id']}")
        assert cache_misses() == misses + 1

    async def test_a_bad_token_is_still_refused(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        response = await client.get(
            f"/v1/products/{product['id']}", headers={"Authorization": "Bearer nonsense"}
        )
        assert_problem(response, 401)

    async def test_other_spellings_of_an_id_go_to_the_route(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        assert_problem(await client.get(f"/v1/products/{product['id']}x"), 422)
        trailing = await client.get(f"/v1/products/{product['id']}/")
        assert trailing.status_code != 200


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


class TestAnonymousProductRead:
    product_id = uuid.UUID("0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10")

    def test_an_anonymous_get_of_one_product(self) -> None:
        for spelled in (str(self.product_id), str(self.product_id).upper()):
            request = scope("GET", f"/v1/products/{spelled}")
            assert anonymous_product_read(request) == self.product_id

    @pytest.mark.parametrize(
        ("method", "path", "headers"),
        [
            (
                "GET",
                "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10",
                [(b"authorization", b"Bearer x")],
            ),
            ("PATCH", "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10", []),
            ("HEAD", "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10", []),
            ("GET", "/v1/products/0b7e4c524a1f4f0e9a432f7d3c1e9b10", []),
            ("GET", "/v1/products/{0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b1}", []),
            ("GET", "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b1z", []),
            ("GET", "/v1/products", []),
            ("GET", "/internal/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10", []),
        ],
    )
    def test_anything_else_is_left_to_the_app(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        assert anonymous_product_read(scope(method, path, headers)) is None
