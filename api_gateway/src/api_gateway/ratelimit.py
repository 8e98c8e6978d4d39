"""Per-client rate limits at the edge, with the `limits` library's sliding window.

Counters live in process memory, or in Redis when `REDIS_URL` is set (needed as soon
as more than one gateway process serves the same clients: each process would otherwise
allow the whole limit). When Redis cannot be reached requests go through: a broken rate
limiter must not take the shop down with it.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

from limits import RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from api_gateway.config import IPNetwork, Settings
from api_gateway.errors import RateLimited
from shared.counters import StorageHealth, close_storage, counter_storage, parse_address
from shared.counters import address_key as rate_limit_key

__all__ = ["ClientAddresses", "RateLimited", "RateLimiter", "rate_limit_key"]


class RateLimiter:
    def __init__(self, per_minute: int, storage_uri: str | None = None) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.storage = counter_storage(storage_uri)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.health = StorageHealth("rate limits")

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """The limiter the settings ask for, or None when limiting is off."""
        if settings.rate_limit_per_minute == 0:
            return None
        return cls(settings.rate_limit_per_minute, settings.redis_url or None)

    async def check(self, client: str) -> None:
        """Count one request of `client`; raise `RateLimited` (429) when over the limit."""
        if self.health.skipping():
            return
        try:
            if await self.strategy.hit(self.item, client):
                return
            stats = await self.strategy.get_window_stats(self.item, client)
        except StorageError:
            self.health.failed()
            return
        retry_after = min(60, max(1, math.ceil(stats.reset_time - time.time())))
        raise RateLimited(
            f"More than {self.item.amount} requests a minute; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def aclose(self) -> None:
        await close_storage(self.storage)


class ClientAddresses:
    """Finds the address a request comes from, believing `X-Forwarded-For` only as far
    as it was written by trusted proxies."""

    def __init__(self, trusted: tuple[IPNetwork, ...]) -> None:
        self.trusted = trusted
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, host: str) -> bool:
        address = parse_address(host)
        return address is not None and any(address in network for network in self.trusted)

    def client(self, peer: str, forwarded_for: bytes | None, peer_trusted: bool) -> str:
        """The client's address: the nearest hop in the chain that is not a trusted proxy."""
        if not peer_trusted or not forwarded_for:
            return peer
        for hop in reversed(forwarded_for.decode("latin-1").split(",")):
            hop = hop.strip()
            if parse_address(hop) is None:
                return peer  # a trusted proxy passed on garbage: fall back to what we saw
            if not self.is_trusted(hop):
                return hop
        return peer
