"""Annotated dependency aliases of the inventory service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from inventory_service.config import Settings
from inventory_service.product_client import ProductClient
from inventory_service.service import ReservationService, StockService
from shared.service import HttpClientDep, SessionDep, app_settings


async def get_stock_service(session: SessionDep, client: HttpClientDep) -> StockService:
    return StockService(session, ProductClient(client))


async def get_reservation_service(session: SessionDep) -> ReservationService:
    return ReservationService(session)


SettingsDep = Annotated[Settings, Depends(app_settings)]
StockServiceDep = Annotated[StockService, Depends(get_stock_service)]
ReservationServiceDep = Annotated[ReservationService, Depends(get_reservation_service)]
