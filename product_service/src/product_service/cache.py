"""A short-lived, in-process cache of public product documents.

The catalog is read far more than it is written, and `GET /products/{id}` is the
hottest route of a shop. Each process keeps the serialized document of a product it
served for `PRODUCT_CACHE_SECONDS`; a write through this process drops the entry at
once, and a write through another replica is seen within that time.
"""

from __future__ import annotations

import time
import uuid

from prometheus_client import Counter

CACHE_LOOKUPS = Counter(
    "product_cache_lookups_total", "Product document cache lookups, by result.", ["result"]
)
_HIT = CACHE_LOOKUPS.labels("hit")
_MISS = CACHE_LOOKUPS.labels("miss")


class ProductCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, tuple[float, bytes]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def get(self, product_id: uuid.UUID, *, count_miss: bool = True) -> bytes | None:
        """The product's document while it is fresh; a hit is counted, and a miss too
        unless `count_miss` is False (a lookup that a counted one may follow)."""
        entry = self._entries.get(product_id)
        if entry is None or entry[0] < time.monotonic():
            if count_miss:
                _MISS.inc()
            return None
        _HIT.inc()
        return entry[1]

    def put(self, product_id: uuid.UUID, document: bytes) -> None:
        if not self.enabled:
            return
        if len(self._entries) >= self.max_entries:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[product_id] = (time.monotonic() + self.ttl_seconds, document)

    def invalidate(self, product_id: uuid.UUID) -> None:
        self._entries.pop(product_id, None)
