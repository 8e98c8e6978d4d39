"""Stock levels through the public API (the gateway's /api/v1/inventory/...)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from httpx import ASGITransport, AsyncClient

from inventory_service.config import Settings
from service_testing import LocalTokens, assert_problem, free_port

if TYPE_CHECKING:
    from conftest import Inventory, MakeProduct, StartApp


def slug(body: dict[str, Any]) -> str:
    return str(body["type"]).rsplit("/", 1)[-1]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    return free_port()


class TestGetStock:
    async def test_anyone_reads_available_and_reserved(
        self, client: AsyncClient, inventory: Inventory
    ) -> None:
        product_id = await inventory.stocked_product(7)
        reserved = await inventory.reserve(uuid.uuid4(), {product_id: 2})
        assert reserved.status_code == 201, reserved.text

        response = await client.get(f"/v1/inventory/{product_id}")

        assert response.status_code == 200, response.text
        assert response.json() == {"product_id": str(product_id), "available": 5, "reserved": 2}

    async def test_product_without_a_record_is_not_found(self, client: AsyncClient) -> None:
        response = await client.get(f"/v1/inventory/{uuid.uuid4()}")

        body = assert_problem(response, 404)
        assert slug(body) == "stock-not-found"

    async def test_id_that_is_not_a_uuid_is_rejected(self, client: AsyncClient) -> None:
        response = await client.get("/v1/inventory/42")

        body = assert_problem(response, 422)
        assert body["errors"][0]["loc"] == ["path", "product_id"]


class TestStockLevels:
    """GET /internal/v1/stock?ids=...: many products in one call (order_service's cart)."""

    async def test_reads_many_products_in_the_order_asked(
        self, client: AsyncClient, inventory: Inventory
    ) -> None:
        first = await inventory.stocked_product(7)
        second = await inventory.stocked_product(0)
        await inventory.reserve(uuid.uuid4(), {first: 3})
        unknown = uuid.uuid4()

        response = await client.get(
            "/internal/v1/stock", params={"ids": [str(second), str(unknown), str(first)]}
        )

        assert response.status_code == 200, response.text
        assert response.json() == {
            "items": [
                {"product_id": str(second), "available": 0, "reserved": 0},
                {"product_id": str(first), "available": 4, "reserved": 3},
            ]
        }

    @pytest.mark.parametrize(
        "params",
        [{}, {"ids": "42"}, {"ids": [str(uuid.UUID(int=n)) for n in range(101)]}],
    )
    async def test_bad_ids_are_rejected(self, client: AsyncClient, params: dict[str, Any]) -> None:
        assert_problem(await client.get("/internal/v1/stock", params=params), 422)


class TestSetStock:
    async def test_admin_creates_then_updates_the_record(
        self, client: AsyncClient, admin: dict[str, str], make_product: MakeProduct
    ) -> None:
        product_id = await make_product()

        created = await client.put(
            f"/v1/inventory/{product_id}", json={"available": 12}, headers=admin
        )
        assert created.status_code == 201, created.text
        assert created.json() == {"product_id": str(product_id), "available": 12, "reserved": 0}

        updated = await client.put(
            f"/v1/inventory/{product_id}", json={"available": 0}, headers=admin
        )
        assert updated.status_code == 200, updated.text
        assert updated.json() == {"product_id": str(product_id), "available": 0, "reserved": 0}
        fetched = await client.get(f"/v1/inventory/{product_id}")
        assert fetched.json() == updated.json()

    async def test_inactive_catalog_product_may_be_stocked(
        self,
        client: AsyncClient,
        admin: dict[str, str],
        make_product: MakeProduct,
        deactivate_product: Callable[[uuid.UUID], Awaitable[None]],
    ) -> None:
        product_id = await make_product()
        await deactivate_product(product_id)
        # The catalog keeps deactivated products for the orders that refer to them.
        response = await client.put(
            f"/v1/inventory/{product_id}", json={"available": 1}, headers=admin
        )

        assert response.status_code == 201, response.text

    async def test_unknown_product_is_not_found(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        product_id = uuid.uuid4()

        response = await client.put(
            f"/v1/inventory/{product_id}", json={"available": 5}, headers=admin
        )

        body = assert_problem(response, 404)
        assert slug(body) == "product-not-found"
        assert body["product_id"] == str(product_id)
        assert_problem(await client.get(f"/v1/inventory/{product_id}"), 404)

    async def test_reserved_units_are_kept(self, client: AsyncClient, inventory: Inventory) -> None:
        product_id = await inventory.stocked_product(10)
        assert (await inventory.reserve(uuid.uuid4(), {product_id: 3})).status_code == 201

        body = await inventory.set_stock(product_id, 20)

        assert body == {"product_id": str(product_id), "available": 20, "reserved": 3}
        units = await inventory.units(product_id)
        assert (units.available, units.reserved, units.sold) == (20, 3, 0)

    async def test_customer_is_forbidden(
        self, client: AsyncClient, customer: dict[str, str], make_product: MakeProduct
    ) -> None:
        product_id = await make_product()

        response = await client.put(
            f"/v1/inventory/{product_id}", json={"available": 5}, headers=customer
        )

        assert_problem(response, 403)
        assert_problem(await client.get(f"/v1/inventory/{product_id}"), 404)

    async def test_without_a_token_is_unauthorized(self, client: AsyncClient) -> None:
        response = await client.put(f"/v1/inventory/{uuid.uuid4()}", json={"available": 5})

        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_deactivated_admin_is_unauthorized(
        self, client: AsyncClient, tokens: LocalTokens, make_product: MakeProduct
    ) -> None:
        product_id = await make_product()

        response = await client.put(
            f"/v1/inventory/{product_id}",
            json={"available": 5},
            headers=tokens.headers(role="admin", active=False),
        )

        assert_problem(response, 401)

    @pytest.mark.parametrize(
        "body",
        [
            {"available": -1},
            {"available": "5"},
            {"available": 5.5},
            {"available": 5.0},
            {"available": True},
            {"available": None},
            {"available": 1_000_000_001},
            {},
            {"available": 5, "reserved": 0},
        ],
    )
    async def test_invalid_body_is_rejected(
        self, client: AsyncClient, admin: dict[str, str], make_product: MakeProduct, body: Any
    ) -> None:
        product_id = await make_product()

        response = await client.put(f"/v1/inventory/{product_id}", json=body, headers=admin)

        problem = assert_problem(response, 422)
        assert problem["errors"]
        assert_problem(await client.get(f"/v1/inventory/{product_id}"), 404)

    async def test_body_that_is_not_json_is_rejected(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.put(
            f"/v1/inventory/{uuid.uuid4()}",
            content=b"{available: 5",
            headers={**admin, "content-type": "application/json"},
        )

        assert_problem(response, 422)

    async def test_id_that_is_not_a_uuid_is_rejected(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.put(
            "/v1/inventory/not-a-uuid", json={"available": 1}, headers=admin
        )

        assert_problem(response, 422)

    async def test_concurrent_first_puts_make_one_record(
        self, client: AsyncClient, admin: dict[str, str], inventory: Inventory
    ) -> None:
        product_id = await inventory.make_product()

        responses = await asyncio.gather(
            *(
                client.put(f"/v1/inventory/{product_id}", json={"available": n}, headers=admin)
                for n in range(1, 11)
            )
        )

        assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
        final = (await client.get(f"/v1/inventory/{product_id}")).json()
        assert final["available"] in range(1, 11)
        assert final["reserved"] == 0


class TestCatalogDown:
    async def test_new_record_needs_the_catalog_and_existing_ones_do_not(
        self,
        settings: Settings,
        start_app: StartApp,
        inventory: Inventory,
        admin: dict[str, str],
    ) -> None:
        stocked = await inventory.stocked_product(3)
        unreachable = settings.model_copy(
            update={
                "product_service_url": f"http://127.0.0.1:{closed_port()}",
                "http_retries": 0,
            }
        )
        async with (
            start_app(unreachable) as app,
            AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
        ):
            new = await client.put(
                f"/v1/inventory/{uuid.uuid4()}", json={"available": 5}, headers=admin
            )
            existing = await client.put(
                f"/v1/inventory/{stocked}", json={"available": 9}, headers=admin
            )

        assert_problem(new, 503)
        assert existing.status_code == 200, existing.text
        assert existing.json()["available"] == 9
