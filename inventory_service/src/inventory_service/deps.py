"""Annotated dependency aliases of the inventory service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inventory_service.catalog import Catalog
from inventory_service.config import Settings
from inventory_service.service import ReservationService, StockService
from shared.service import HttpClientDep, SessionDep


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_stock_service(session: SessionDep, client: HttpClientDep) -> StockService:
    return StockService(session, Catalog(client))


async def get_reservation_service(session: SessionDep) -> ReservationService:
    return ReservationService(session)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StockServiceDep = Annotated[StockService, Depends(get_stock_service)]
ReservationServiceDep = Annotated[ReservationService, Depends(get_reservation_service)]
