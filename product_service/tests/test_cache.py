"""The public product document is served from memory, and writes are seen at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from service_testing import assert_problem


def cache_hits(app: FastAPI) -> float:
    from product_service.cache import CACHE_LOOKUPS

    return CACHE_LOOKUPS.labels("hit")._value.get()


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
