"""What the order service asks product_service and inventory_service (their internal APIs).

Calls go through the process's one `ServiceClient`: a service that cannot be reached
or times out comes out as its 503/504 problem error. An answer these wrappers cannot
use (an unexpected status, a body that does not parse) is a 503 too: the dependency is
not doing its job, and the client may retry later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from order_service.domain.pricing import CatalogProduct
from shared.http import CircuitOpen, CircuitState, ServiceClient, UpstreamUnavailable

logger = logging.getLogger(__name__)

PRODUCT_UPSTREAM = "product"
INVENTORY_UPSTREAM = "inventory"


def _unusable(upstream: str, response: httpx.Response, what: str) -> UpstreamUnavailable:
    headers = {}
    if retry_after := response.headers.get("retry-after"):
        headers["Retry-After"] = retry_after
    logger.warning(
        "unexpected upstream answer",
        extra={"upstream": upstream, "status": response.status_code, "call": what},
    )
    return UpstreamUnavailable(
        f"The {upstream} service answered {response.status_code} to {what}.", headers=headers
    )


def _problem_type(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


BatchT = TypeVar("BatchT", bound=BaseModel)


async def _get_batch(
    client: ServiceClient,
    upstream: str,
    path: str,
    product_ids: Iterable[uuid.UUID],
    model: type[BatchT],
    what: str,
) -> BatchT:
    """GET `path?ids=...` for many products in one call, parsed as `model`."""
    ids = [str(product_id) for product_id in dict.fromkeys(product_ids)]
    response = await client.request(upstream, "GET", path, params={"ids": ids})
    if response.status_code != 200:
        raise _unusable(upstream, response, what)
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        raise _unusable(upstream, response, what) from error


class _CatalogItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    name: str
    price: Decimal
    currency: str
    is_active: bool


class _CatalogBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[_CatalogItem]


class Catalog:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def get_products(
        self, product_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, CatalogProduct]:
        """The products the catalog knows among `product_ids` (active or not), by id."""
        batch = await _get_batch(
            self.client,
            PRODUCT_UPSTREAM,
            "/internal/v1/products",
            product_ids,
            _CatalogBatch,
            "a product lookup",
        )
        return {
            item.id: CatalogProduct(
                id=item.id,
                name=item.name,
                price=item.price,
                currency=item.currency,
                is_active=item.is_active,
            )
            for item in batch.items
        }


class Reservation(StrEnum):
    """What became of a reservation request or a commit."""

    RESERVED = "reserved"
    COMMITTED = "committed"
    #: Given back (released, or expired before the commit).
    RELEASED = "released"
    #: Refused: some line's product has too little stock; nothing is held.
    INSUFFICIENT = "insufficient"
    #: Inventory has no reservation for the order.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    result: Reservation
    #: The product that was short (INSUFFICIENT only).
    product_id: uuid.UUID | None = None


class _StockLevel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    product_id: uuid.UUID
    available: int


class _StockLevels(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[_StockLevel]


class Inventory:
    """Reservations are idempotent per order id at inventory_service, so every call here
    may be retried safely (`idempotent=True`) even though they are POSTs."""

    def __init__(self, client: ServiceClient, *, ttl_seconds: int) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds

    def raise_if_circuit_open(self) -> None:
        """Refuse at once (503, Retry-After) while inventory's circuit is open, before
        an order is created that could not get its stock anyway."""
        breaker = self.client.breakers[INVENTORY_UPSTREAM]
        if breaker.state is CircuitState.OPEN:
            raise CircuitOpen(
                f"{INVENTORY_UPSTREAM} is failing; calls are paused for a moment.",
                headers={"Retry-After": str(breaker.retry_after())},
            )

    async def available(self, product_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Units available now of each product that has a stock record, in one call."""
        levels = await _get_batch(
            self.client,
            INVENTORY_UPSTREAM,
            "/internal/v1/stock",
            product_ids,
            _StockLevels,
            "a stock lookup",
        )
        return {level.product_id: level.available for level in levels.items}

    async def reserve(
        self, order_id: uuid.UUID, lines: Sequence[tuple[uuid.UUID, int]]
    ) -> ReserveOutcome:
        """Hold every line's quantity for the order, or nothing."""
        body: dict[str, Any] = {
            "order_id": str(order_id),
            "items": [
                {"product_id": str(product_id), "quantity": quantity}
                for product_id, quantity in lines
            ],
            "ttl_seconds": self.ttl_seconds,
        }
        response = await self.client.request(
            INVENTORY_UPSTREAM, "POST", "/internal/v1/reservations", json=body, idempotent=True
        )
        if response.status_code in (200, 201):
            # A repeat (200) answers with the reservation as it is now: a concurrent
            # cancellation may already have released it.
            return ReserveOutcome(self._status(response, "a reservation"))
        if response.status_code == 409 and _problem_type(response).endswith("insufficient-stock"):
            try:
                product_id = uuid.UUID(str(response.json()["product_id"]))
            except (ValueError, KeyError, TypeError):
                product_id = None
            return ReserveOutcome(Reservation.INSUFFICIENT, product_id)
        raise _unusable(INVENTORY_UPSTREAM, response, "a reservation")

    async def commit(self, order_id: uuid.UUID) -> Reservation:
        """Turn the held stock into sold stock: COMMITTED, or RELEASED when the
        reservation was given back (it expired), or UNKNOWN."""
        response = await self.client.request(
            INVENTORY_UPSTREAM,
            "POST",
            f"/internal/v1/reservations/{order_id}/commit",
            idempotent=True,
        )
        if response.status_code == 200:
            return self._status(response, "a commit")
        if response.status_code == 409 and _problem_type(response).endswith("reservation-released"):
            return Reservation.RELEASED
        if response.status_code == 404:
            return Reservation.UNKNOWN
        raise _unusable(INVENTORY_UPSTREAM, response, "a commit")

    async def release(self, order_id: uuid.UUID, reason: str) -> None:
        """Give the order's stock back, held or sold; done too when there is none."""
        response = await self.client.request(
            INVENTORY_UPSTREAM,
            "POST",
            f"/internal/v1/reservations/{order_id}/release",
            json={"reason": reason},
            idempotent=True,
        )
        if response.status_code not in (200, 404):
            raise _unusable(INVENTORY_UPSTREAM, response, "a release")

    def _status(self, response: httpx.Response, what: str) -> Reservation:
        try:
            status = response.json()["status"]
            result = Reservation(status)
        except (ValueError, KeyError, TypeError) as error:
            raise _unusable(INVENTORY_UPSTREAM, response, what) from error
        if result not in (Reservation.RESERVED, Reservation.COMMITTED, Reservation.RELEASED):
            raise _unusable(INVENTORY_UPSTREAM, response, what)
        return result
