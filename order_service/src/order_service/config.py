"""Settings of the order service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import ServiceSettings

#: The longest hold inventory_service grants one reservation.
MAX_RESERVATION_TTL_SECONDS = 3600


class Settings(ServiceSettings):
    service_name: str = "order_service"

    #: The catalog: names and prices of what is ordered come only from here.
    product_service_url: str = "http://127.0.0.1:8002"
    #: Stock reservations for the checkout saga.
    inventory_service_url: str = "http://127.0.0.1:8004"

    #: How long inventory holds an order's stock before giving it back by itself.
    reservation_ttl_seconds: int = Field(default=900, ge=1, le=MAX_RESERVATION_TTL_SECONDS)
    #: A `pending` order older than the reservation TTL plus this was abandoned (its
    #: checkout crashed or failed half-way): the sweep cancels it as `expired`.
    pending_order_grace_seconds: float = Field(default=60.0, ge=0)
    #: How often the sweep looks for abandoned orders and unfinished compensations.
    order_sweep_seconds: float = Field(default=30.0, gt=0)
    #: Live status streams: how often a process reads the orders its clients watch
    #: (changes made by this process are sent at once), and the keep-alive comment's
    #: interval (the contract promises one at least every 15 s).
    order_stream_poll_seconds: float = Field(default=0.25, gt=0, le=5)
    order_stream_ping_seconds: int = Field(default=10, ge=1, le=15)
    #: Checkouts one process runs at once; more wait for a turn (`CheckoutLimit`).
    checkout_concurrency: int = Field(default=32, ge=1)
    #: How long a completed Idempotency-Key is remembered (and replayed).
    idempotency_key_retention_hours: float = Field(default=24.0, gt=0)

    @property
    def pending_order_timeout_seconds(self) -> float:
        return self.reservation_ttl_seconds + self.pending_order_grace_seconds


@lru_cache
def get_settings() -> Settings:
    return Settings()
