"""Per-client rate limits at the edge, with the `limits` library's sliding window.

Counters live in process memory, or in Redis when `REDIS_URL` is set (needed as soon
as more than one gateway process serves the same clients: each process would otherwise
allow the whole limit). When Redis cannot be reached requests go through: a broken rate
limiter must not take the shop down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from api_gateway.config import IPNetwork, Settings
from api_gateway.errors import RateLimited

logger = logging.getLogger(__name__)

#: How often a failing storage is reported, at most.
_STORAGE_WARNING_INTERVAL = 60.0
#: After a storage failure, requests go unlimited this long before it is tried again,
#: so that a Redis that hangs costs one timeout now and then, not one per request.
_STORAGE_RETRY_SECONDS = 5.0
#: Redis connect and read timeout: the limiter must never be what makes a request slow.
_STORAGE_TIMEOUT_SECONDS = 0.25
#: How often the in-memory counters are swept for expired keys.
_SWEEP_INTERVAL = 1.0


class SweptMemoryStorage(MemoryStorage):
    """`limits`' in-memory storage, sweeping expired keys once a second.

    The library starts a sweep of every key after every hit: O(clients) per request,
    2.5 ms a request with 20,000 recent clients. Reads check expiry themselves, so the
    sweep only frees memory and once a second does that as well.
    """

    _swept_at = -math.inf

    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= _SWEEP_INTERVAL:
            self._swept_at = now
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


class RateLimiter:
    def __init__(self, per_minute: int, storage_uri: str | None = None) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.storage = (
            SweptMemoryStorage(wrap_exceptions=True)
            if storage_uri is None
            else _async_storage(storage_uri)
        )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self._warned_at = -math.inf
        self._failed_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """The limiter the settings ask for, or None when limiting is off."""
        if settings.rate_limit_per_minute == 0:
            return None
        uri = settings.redis_url or None
        if uri is not None and not uri.startswith("async+"):
            uri = f"async+{uri}"
        return cls(settings.rate_limit_per_minute, uri)

    async def check(self, client: str) -> None:
        """Count one request of `client`; raise `RateLimited` (429) when over the limit."""
        if time.monotonic() - self._failed_at < _STORAGE_RETRY_SECONDS:
            return
        try:
            if await self.strategy.hit(self.item, client):
                return
            stats = await self.strategy.get_window_stats(self.item, client)
        except StorageError:
            self._failed_at = time.monotonic()
            self._warn_storage_failure()
            return
        retry_after = min(60, max(1, math.ceil(stats.reset_time - time.time())))
        raise RateLimited(
            f"More than {self.item.amount} requests a minute; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def aclose(self) -> None:
        """Stop the in-memory storage's expiry task (other storages hold nothing to stop)."""
        timer = getattr(self.storage, "timer", None)
        if isinstance(timer, asyncio.Task) and not timer.done():
            timer.cancel()

    def _warn_storage_failure(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _STORAGE_WARNING_INTERVAL:
            self._warned_at = now
            logger.warning("rate limit storage failed; letting requests through", exc_info=True)


def _async_storage(uri: str) -> Storage:
    storage = storage_from_string(
        uri,
        wrap_exceptions=True,
        connect_timeout=_STORAGE_TIMEOUT_SECONDS,
        stream_timeout=_STORAGE_TIMEOUT_SECONDS,
    )
    if not isinstance(storage, Storage):
        raise ValueError(f"{uri.split(':', 1)[0]} is not an async rate limit storage")
    return storage


class ClientAddresses:
    """Finds the address a request comes from, believing `X-Forwarded-For` only as far
    as it was written by trusted proxies."""

    def __init__(self, trusted: tuple[IPNetwork, ...]) -> None:
        self.trusted = trusted
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, host: str) -> bool:
        address = _parse(host)
        return address is not None and any(address in network for network in self.trusted)

    def client(self, peer: str, forwarded_for: bytes | None, peer_trusted: bool) -> str:
        """The client's address: the nearest hop in the chain that is not a trusted proxy."""
        if not peer_trusted or not forwarded_for:
            return peer
        for hop in reversed(forwarded_for.decode("latin-1").split(",")):
            hop = hop.strip()
            if _parse(hop) is None:
                return peer  # a trusted proxy passed on garbage: fall back to what we saw
            if not self.is_trusted(hop):
                return hop
        return peer


def rate_limit_key(client: str) -> str:
    """The bucket a client counts against: its address, or its /64 for IPv6 (one
    subscriber usually holds a whole /64, so single addresses would be free to rotate)."""
    if ":" not in client:
        return client
    address = _parse(client)
    if isinstance(address, IPv6Address):
        return f"{ip_network(f'{address}/64', strict=False)}"
    return str(address) if address is not None else client


def _parse(host: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(host)
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; they are IPv4 clients.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
