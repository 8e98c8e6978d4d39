"""Service-to-service routes for order_service's checkout saga and cart; the gateway
never routes /internal, and these answer order_service's credential alone."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from inventory_service.deps import ReservationServiceDep, SettingsDep, StockServiceDep
from inventory_service.schemas import (
    ReservationCreate,
    ReservationRead,
    ReservationRelease,
    StockBatch,
    StockRead,
)
from shared.schemas import BatchIds
from shared.service_auth import require_service

# Only the checkout saga holds, sells, commits and gives back stock.
router = APIRouter(
    prefix="/internal/v1/reservations",
    tags=["internal"],
    dependencies=[require_service("order_service")],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_200_OK: {"model": ReservationRead, "description": "A repeat"}},
)
async def reserve_stock(
    data: ReservationCreate,
    reservations: ReservationServiceDep,
    settings: SettingsDep,
    response: Response,
) -> ReservationRead:
    """Hold every line's quantity for the order, or nothing (409 `insufficient-stock`);
    with `sell` (a paid order) the units are sold at once and the reservation is
    `committed`.

    Idempotent per `order_id`: a repeat answers 200 with the reservation as it is now
    and holds nothing more; a repeat with other lines is a 409."""
    reservation, created = await reservations.reserve(
        data, default_ttl_seconds=settings.reservation_ttl_seconds
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return ReservationRead.model_validate(reservation)


@router.get("/{order_id}")
async def get_reservation(
    order_id: uuid.UUID, reservations: ReservationServiceDep
) -> ReservationRead:
    """The order's reservation."""
    return ReservationRead.model_validate(await reservations.get(order_id))


@router.post("/{order_id}/commit")
async def commit_reservation(
    order_id: uuid.UUID, reservations: ReservationServiceDep
) -> ReservationRead:
    """The order is confirmed: its held units become sold. Idempotent; a released
    (or expired) reservation is a 409 `reservation-released`."""
    return ReservationRead.model_validate(await reservations.commit(order_id))


@router.post("/{order_id}/release")
async def release_reservation(
    order_id: uuid.UUID,
    reservations: ReservationServiceDep,
    data: ReservationRelease | None = None,
) -> ReservationRead:
    """Give the order's units back, held or already sold (an order cancelled after
    confirmation). Idempotent: the first reason stays. 404 when the order never
    reserved anything, which a caller undoing a checkout may treat as done."""
    reason = (data or ReservationRelease()).reason
    return ReservationRead.model_validate(await reservations.release(order_id, reason))


#: Stock levels of many products in one call (order_service's cart shows up to 50 lines).
stock_levels = APIRouter(
    prefix="/internal/v1/stock",
    tags=["internal"],
    dependencies=[require_service("order_service")],
)


@stock_levels.get("")
async def read_stock_levels(
    ids: BatchIds,
    stock: StockServiceDep,
) -> StockBatch:
    """Stock of the products asked for (those without a stock record are left out)."""
    return StockBatch(
        items=[StockRead.model_validate(record) for record in await stock.get_many(ids)]
    )
