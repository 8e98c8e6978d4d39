"""A short-lived, in-process cache of public product documents.

The catalog is read far more than it is written, and `GET /products/{id}` is the
hottest route of a shop. Each process keeps the serialized document of a product it
served for `PRODUCT_CACHE_SECONDS`; a write through this process drops the entry at
once, and a write through another replica is seen within that time. Its answers say so
(`Cache-Control: public, max-age=` the seconds the entry has left), so that a shared
cache in front (the gateway's) keeps them no longer than this one does.

An entry read in its last fifth is read again from the database in the background (one
read per product at a time), so a product read all the time never expires: when it did,
every request in flight missed at once and each queued for a database connection. At
256 connections on one product (`make bench`) that stampede, once per expiry, made a
thousand reads of three hundred thousand take 0.1-10 s and 32 of them outlast wrk's 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from prometheus_client import Counter

from shared.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

#: Reads a product's public document from the database: None when it is gone or inactive.
Loader = Callable[[uuid.UUID], Awaitable[bytes | None]]

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
        self._loader: Loader | None = None
        # The database read under way for a product, shared by everyone who wants it.
        self._reading: dict[uuid.UUID, asyncio.Task[CachedDocument | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def load_with(self, loader: Loader | None) -> None:
        """Read missing and expiring documents with `loader` (None: stop reading)."""
        self._loader = loader

    async def aclose(self) -> None:
        """Stop reading, and wait for the reads under way to end."""
        self._loader = None
        reads = list(self._reading.values())
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)

    def get(self, product_id: uuid.UUID, *, count_miss: bool = True) -> CachedDocument | None:
        """The product's document while it is fresh; a hit is counted, and a miss too
        unless `count_miss` is False (a lookup that a counted one may follow). A hit in
        the entry's last fifth starts its refresh, unless one is under way."""
        entry = self._entries.get(product_id)
        now = time.monotonic()
        if entry is None or entry.expires_at < now:
            if count_miss:
                _MISS.inc()
            return None
        _HIT.inc()
        expiring = entry.expires_at - now < self.ttl_seconds / 5
        if expiring and self._loader is not None and product_id not in self._reading:
            self._read(product_id, self._loader)
        return entry

    async def fetch(self, product_id: uuid.UUID) -> CachedDocument | None:
        """The product's entry, read from the database (None: gone or inactive). All the
        readers of one product share one read, so an entry that expires under load costs
        one query, not one per request in flight."""
        while True:
            read = self._reading.get(product_id)
            if read is None:
                if self._loader is None:
                    # Closed: the app is stopping and its database with it. A request
                    # that outlived the graceful shutdown is told to try again (a 503),
                    # not given a 500.
                    raise ServiceUnavailable(
                        "The catalog is shutting down; try again.", headers={"Retry-After": "1"}
                    )
                read = self._read(product_id, self._loader)
            try:
                # Shielded: a reader that goes away does not end the read of the others.
                return await asyncio.shield(read)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not read.cancelled() or (current is not None and current.cancelling()):
                    raise
                # A write dropped the read under way (it may have seen the product before
                # the write): read again.

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
        """Drop a product's entry, and the read under way that may have seen the product
        before the write that calls this."""
        self._entries.pop(product_id, None)
        if (read := self._reading.pop(product_id, None)) is not None:
            read.cancel()

    def _read(self, product_id: uuid.UUID, loader: Loader) -> asyncio.Task[CachedDocument | None]:
        read = asyncio.get_running_loop().create_task(self._load(product_id, loader))
        self._reading[product_id] = read

        def done(finished: asyncio.Task[CachedDocument | None]) -> None:
            if self._reading.get(product_id) is finished:
                del self._reading[product_id]
            if not finished.cancelled() and (error := finished.exception()) is not None:
                # A refresh has no one waiting for it: the entry serves until it expires
                # and a later reader tries again.
                logger.warning("reading product %s failed: %r", product_id, error)

        read.add_done_callback(done)
        return read

    async def _load(self, product_id: uuid.UUID, loader: Loader) -> CachedDocument | None:
        document = await loader(product_id)
        # Nothing awaited from here on: an `invalidate` either cancelled the read above
        # or comes after this put and drops it.
        if document is None:
            self._entries.pop(product_id, None)
            return None
        return self.put(product_id, document)
