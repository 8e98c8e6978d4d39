"""Settings of the inventory service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import ServiceSettings

#: The longest hold a caller may ask for on one reservation.
MAX_RESERVATION_TTL_SECONDS = 3600


class Settings(ServiceSettings):
    service_name: str = "inventory_service"

    #: Where the catalog is: a stock record is only created for a product it knows.
    product_service_url: str = "http://127.0.0.1:8002"

    #: How long a reservation holds stock unless committed or released first.
    reservation_ttl_seconds: int = Field(default=900, ge=1, le=MAX_RESERVATION_TTL_SECONDS)
    #: How often expired reservations are looked for and given back.
    reservation_sweep_seconds: float = Field(default=5.0, gt=0)
    #: Expired reservations released per query while sweeping.
    reservation_sweep_batch_size: int = Field(default=100, ge=1, le=10_000)


@lru_cache
def get_settings() -> Settings:
    return Settings()
