"""Settings of the product service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "product_service"


@lru_cache
def get_settings() -> Settings:
    return Settings()
