"""Where rate counters live: process memory, or Redis when `REDIS_URL` is set (shared by
every replica). Used by the gateway's per-client limits and the user service's login
throttle, both through the `limits` library's strategies.

A counter store that fails lets requests through (the callers catch `StorageError`): a
broken Redis must not take the shop down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from limits.aio.storage import MemoryStorage, Storage
from limits.storage import storage_from_string

logger = logging.getLogger(__name__)

#: Redis connect and read timeout: a counter must never be what makes a request slow.
STORAGE_TIMEOUT_SECONDS = 0.25
#: How often the in-memory counters are swept for expired keys.
_SWEEP_INTERVAL = 1.0
#: How often a failing storage is reported, at most.
_WARNING_INTERVAL = 60.0


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


def counter_storage(redis_url: str | None) -> Storage:
    """Counters in Redis at `redis_url` (`redis://`, `rediss://`), or in memory without one."""
    if not redis_url:
        return SweptMemoryStorage(wrap_exceptions=True)
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    storage = storage_from_string(
        uri,
        wrap_exceptions=True,
        connect_timeout=STORAGE_TIMEOUT_SECONDS,
        stream_timeout=STORAGE_TIMEOUT_SECONDS,
    )
    if not isinstance(storage, Storage):
        raise ValueError(f"{uri.split(':', 1)[0]} is not an async counter storage")
    return storage


async def close_storage(storage: Storage) -> None:
    """Stop the in-memory storage's expiry task (other storages hold nothing to stop)."""
    timer = getattr(storage, "timer", None)
    if isinstance(timer, asyncio.Task) and not timer.done():
        timer.cancel()


def parse_address(host: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(host)
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; they are IPv4 clients.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(client: str) -> str:
    """The bucket a client address counts against: itself, or its /64 for IPv6 (one
    subscriber usually holds a whole /64, so single addresses would be free to rotate)."""
    if ":" not in client:
        return client
    address = parse_address(client)
    if isinstance(address, IPv6Address):
        return f"{ip_network(f'{address}/64', strict=False)}"
    return str(address) if address is not None else client


class StorageHealth:
    """Remembers that the counter store failed: for `retry_seconds` after a failure the
    callers skip it (a Redis that hangs costs one timeout now and then, not one per
    request), and a warning is logged at most once a minute."""

    def __init__(self, purpose: str, *, retry_seconds: float = 5.0) -> None:
        self.purpose = purpose
        self.retry_seconds = retry_seconds
        self._failed_at = -math.inf
        self._warned_at = -math.inf

    def skipping(self) -> bool:
        return time.monotonic() - self._failed_at < self.retry_seconds

    def failed(self) -> None:
        """Call from the `except StorageError` of a counter call."""
        now = self._failed_at = time.monotonic()
        if now - self._warned_at >= _WARNING_INTERVAL:
            self._warned_at = now
            logger.warning(
                "counter storage failed; letting requests through",
                extra={"purpose": self.purpose},
                exc_info=True,
            )
