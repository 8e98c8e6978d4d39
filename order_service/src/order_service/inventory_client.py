"""What the order service asks inventory_service (its internal API): stock levels and
reservations.

Calls go through the process's one `ServiceClient`: a service that cannot be reached
or times out comes out as its 503/504 problem error, and an answer this wrapper cannot
use (an unexpected status, a body that does not parse) is a 503 too (`unusable_answer`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from shared.http import (
    CircuitOpen,
    CircuitState,
    ServiceClient,
    get_batch,
    problem_type,
    unusable_answer,
)

INVENTORY_UPSTREAM = "inventory"


class Reservation(StrEnum):
    """What became of an order's request for stock."""

    #: Held, waiting for a commit (inventory's reservation without `sell`).
    RESERVED = "reserved"
    #: Sold to the order.
    COMMITTED = "committed"
    #: Given back (a cancellation or an expiry released it).
    RELEASED = "released"
    #: Refused: some line's product has too little stock; nothing is held.
    INSUFFICIENT = "insufficient"


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


class InventoryClient:
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
        levels = await get_batch(
            self.client,
            INVENTORY_UPSTREAM,
            "/internal/v1/stock",
            product_ids,
            _StockLevels,
            "a stock lookup",
        )
        return {level.product_id: level.available for level in levels.items}

    async def sell(
        self, order_id: uuid.UUID, lines: Sequence[tuple[uuid.UUID, int]]
    ) -> ReserveOutcome:
        """Take every line's quantity for the paid order, or nothing: the units are sold
        at once and the reservation is COMMITTED. A repeat answers with the order's
        reservation as it is now (RELEASED when a cancellation gave it back)."""
        body: dict[str, Any] = {
            "order_id": str(order_id),
            "items": [
                {"product_id": str(product_id), "quantity": quantity}
                for product_id, quantity in lines
            ],
            "ttl_seconds": self.ttl_seconds,
            "sell": True,
        }
        response = await self.client.request(
            INVENTORY_UPSTREAM, "POST", "/internal/v1/reservations", json=body, idempotent=True
        )
        if response.status_code in (200, 201):
            # A repeat (200) answers with the reservation as it is now: a concurrent
            # cancellation may already have released it.
            return ReserveOutcome(self._status(response, "a reservation"))
        if response.status_code == 409 and problem_type(response).endswith("insufficient-stock"):
            try:
                product_id = uuid.UUID(str(response.json()["product_id"]))
            except (ValueError, KeyError, TypeError):
                product_id = None
            return ReserveOutcome(Reservation.INSUFFICIENT, product_id)
        raise unusable_answer(INVENTORY_UPSTREAM, response, "a reservation")

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
            raise unusable_answer(INVENTORY_UPSTREAM, response, "a release")

    def _status(self, response: httpx.Response, what: str) -> Reservation:
        try:
            status = response.json()["status"]
            result = Reservation(status)
        except (ValueError, KeyError, TypeError) as error:
            raise unusable_answer(INVENTORY_UPSTREAM, response, what) from error
        if result not in (Reservation.RESERVED, Reservation.COMMITTED, Reservation.RELEASED):
            raise unusable_answer(INVENTORY_UPSTREAM, response, what)
        return result
