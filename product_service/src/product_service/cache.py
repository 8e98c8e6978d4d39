"""A short-lived, in-process cache of public product documents.

The catalog is read far more than it is written, and `GET /products/{id}` is the
hottest route of a shop. Each process keeps the serialized document of a product it
served for `PRODUCT_CACHE_SECONDS`; a write through this process drops the entry at
once, and a write through another replica is seen within that time. Its answers say so
(`Cache-Control: public, max-age=` the seconds the entry has left), so that a shared
cache in front (the gateway's) keeps them no longer than this one does.
"""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from prometheus_client import Counter

CACHE_LOOKUPS = Counter(
    "product_cache_lookups_total", "Product document cache lookups, by result.", ["result"]
)
_HIT = CACHE_LOOKUPS.labels("hit")
_MISS = CACHE_LOOKUPS.labels("miss")


class CachedDocument(NamedTuple):
    """A product's serialized document, and when it goes stale (`time.monotonic()`)."""

    expires_at: float
    document: bytes

    def cache_control(self, now: float) -> str:
        """The `Cache-Control` of an answer with this document: anyone may keep it for
        the whole seconds it has left here."""
        return f"public, max-age={max(int(self.expires_at - now), 0)}"


class ProductCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, CachedDocument] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def get(self, product_id: uuid.UUID, *, count_miss: bool = True) -> CachedDocument | None:
        """The product's document while it is fresh; a hit is counted, and a miss too
        unless `count_miss` is False (a lookup that a counted one may follow)."""
        entry = self._entries.get(product_id)
        if entry is None or entry.expires_at < time.monotonic():
            if count_miss:
                _MISS.inc()
            return None
        _HIT.inc()
        return entry

    def put(self, product_id: uuid.UUID, document: bytes) -> CachedDocument | None:
        """Keep a product's document; None when the cache is off."""
        if not self.enabled:
            return None
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v.expires_at >= now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        entry = self._entries[product_id] = CachedDocument(now + self.ttl_seconds, document)
        return entry

    def invalidate(self, product_id: uuid.UUID) -> None:
        self._entries.pop(product_id, None)
