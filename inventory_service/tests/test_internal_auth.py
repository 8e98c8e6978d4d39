"""The internal routes answer order_service alone: without a credential, with a user's
token or with another service's credential, nothing is held, sold or given back."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from httpx import AsyncClient

from service_testing import LocalTokens, assert_problem, service_headers

if TYPE_CHECKING:
    from conftest import Inventory

ORDER = str(uuid.uuid4())
#: Every internal route of the service, with a body that would be valid.
ROUTES = [
    ("POST", "/internal/v1/reservations", {"order_id": ORDER, "items": []}),
    ("GET", f"/internal/v1/reservations/{ORDER}", None),
    ("POST", f"/internal/v1/reservations/{ORDER}/commit", None),
    ("POST", f"/internal/v1/reservations/{ORDER}/release", {"reason": "cancelled_by_user"}),
    ("GET", f"/internal/v1/stock?ids={ORDER}", None),
]
OTHER_SERVICES = ["user_service", "product_service", "notification_service", "api_gateway"]


def credential(kind: str, tokens: LocalTokens) -> dict[str, str]:
    if kind == "none":
        return {}
    if kind in ("customer", "admin"):
        return tokens.headers(role=kind)
    # order_service's credential, but addressed to another service.
    return service_headers("order_service", "product_service")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
class TestEveryInternalRoute:
    @pytest.mark.parametrize("kind", ["none", "customer", "admin", "other_audience"])
    async def test_without_a_service_credential_is_401(
        self,
        outsider: AsyncClient,
        tokens: LocalTokens,
        method: str,
        path: str,
        body: object,
        kind: str,
    ) -> None:
        response = await outsider.request(method, path, json=body, headers=credential(kind, tokens))
        assert_problem(response, 401)

    @pytest.mark.parametrize("caller", OTHER_SERVICES)
    async def test_another_services_credential_is_403(
        self, outsider: AsyncClient, method: str, path: str, body: object, caller: str
    ) -> None:
        headers = service_headers(caller, "inventory_service")
        assert_problem(await outsider.request(method, path, json=body, headers=headers), 403)


class TestReleasingAConfirmedOrder:
    """The attack found from the network: a confirmed order's sold units put back on sale
    by one unauthenticated POST, with no order cancelled."""

    async def sold_units(self, inventory: Inventory) -> tuple[uuid.UUID, uuid.UUID]:
        product_id = await inventory.stocked_product(10)
        order_id = uuid.uuid4()
        assert (await inventory.reserve(order_id, {product_id: 3})).status_code == 201
        assert (await inventory.commit(order_id)).status_code == 200
        assert await inventory.units(product_id) == (7, 0, 3)
        return product_id, order_id

    @pytest.mark.parametrize(
        "kind", ["none", "customer", "admin", "other_audience", *OTHER_SERVICES]
    )
    async def test_is_refused_and_changes_nothing(
        self, inventory: Inventory, outsider: AsyncClient, tokens: LocalTokens, kind: str
    ) -> None:
        product_id, order_id = await self.sold_units(inventory)
        headers = (
            service_headers(kind, "inventory_service")
            if kind in OTHER_SERVICES
            else credential(kind, tokens)
        )
        response = await outsider.post(
            f"/internal/v1/reservations/{order_id}/release",
            json={"reason": "cancelled_by_user"},
            headers=headers,
        )
        assert_problem(response, 403 if kind in OTHER_SERVICES else 401)
        assert await inventory.units(product_id) == (7, 0, 3)

    async def test_order_service_may(self, inventory: Inventory, outsider: AsyncClient) -> None:
        product_id, order_id = await self.sold_units(inventory)
        response = await outsider.post(
            f"/internal/v1/reservations/{order_id}/release",
            json={"reason": "cancelled_by_user"},
            headers=service_headers("order_service", "inventory_service"),
        )
        assert response.status_code == 200, response.text
        assert await inventory.units(product_id) == (10, 0, 0)
