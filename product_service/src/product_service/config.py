"""Settings of the product service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "product_service"
    #: How long a process serves a product document from memory; 0 turns it off.
    product_cache_seconds: float = Field(default=5.0, ge=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
