"""A shared cache at the edge, for anonymous reads a service marks as shareable.

A service says an answer may be shared with `Cache-Control: public, max-age=N`
(product_service does for a product's document, with N the seconds its own cache keeps
it). The gateway then answers the same anonymous `GET` from memory for those N seconds:
no hop to the service and back, which is most of a proxied read's cost. This is the
part of a shared cache (RFC 9111) that the services use, nothing more:

- stored: a 200 to an anonymous `GET` of a public route, whose answer says `public`
  with a `max-age` (or `s-maxage`) above zero and neither `private`, `no-store` nor
  `no-cache`, sets no cookie, varies by nothing and declares its length, up to
  `max_body_bytes`;
- not answered from it: a request with a token, or one asking `Cache-Control:
  no-cache` (it goes to the service, and the answer replaces the entry);
- answered from it: the stored status, headers and body, with an `Age`;
- dropped: a path's entries, by any other method on that path through this gateway,
  before it is forwarded, so that whoever changed a product reads the change at once.
  A change through another gateway process is seen within `max-age`, as with the
  service's own cache.

When a stored answer expires under load, every request in flight for it would miss at
once and be forwarded (at 256 connections, hundreds of the same read opening as many
connections to the service). So the first miss of an answer that was stored forwards,
and the others wait for its answer (collapsed forwarding, as nginx's `proxy_cache_lock`):
one hop per expiry. Reads of what was never stored are not held back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from api_gateway.headers import RawHeaders

CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups_total",
    "Lookups of anonymous reads in the gateway's response cache, by result.",
    ["result"],
)
_HIT = CACHE_LOOKUPS.labels("hit")
_MISS = CACHE_LOOKUPS.labels("miss")

#: Directives that keep an answer out of a shared cache.
_NOT_SHARED = frozenset({"private", "no-store", "no-cache"})


@dataclass(slots=True)
class CachedResponse:
    """A stored answer: what the client is sent, and when it was stored and goes stale."""

    status: int
    headers: RawHeaders
    body: bytes
    stored_at: float
    expires_at: float

    def headers_at(self, now: float) -> RawHeaders:
        """The stored headers with the answer's `Age` (whole seconds since stored)."""
        return [*self.headers, (b"age", str(int(now - self.stored_at)).encode("latin-1"))]


def shared_max_age(headers: RawHeaders) -> int:
    """Seconds a shared cache may keep an answer with these (lower-cased) headers; 0 when
    it may not: no `public`, a directive against it, a cookie or a `Vary`."""
    directives: list[str] = []
    for name, value in headers:
        if name == b"cache-control":
            directives.extend(part.strip().lower() for part in value.decode("latin-1").split(","))
        elif name in (b"set-cookie", b"vary"):
            return 0
    if "public" not in directives or not _NOT_SHARED.isdisjoint(directives):
        return 0
    ages: dict[str, int] = {}
    for directive in directives:
        key, _, seconds = directive.partition("=")
        if key in ("max-age", "s-maxage") and seconds.strip().isdigit():
            ages[key] = int(seconds.strip())
    return ages.get("s-maxage", ages.get("max-age", 0))


def asks_for_a_fresh_answer(cache_control: bytes | None) -> bool:
    """Whether the client's `Cache-Control` says not to answer it from a cache."""
    return cache_control is not None and (
        b"no-cache" in cache_control.lower() or b"max-age=0" in cache_control.lower()
    )


class ResponseCache:
    """Stored answers by upstream path, then query string; at most `max_entries`.

    When full, expired answers go first, then the oldest paths."""

    def __init__(
        self,
        max_entries: int,
        max_body_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self._paths: dict[str, dict[bytes, CachedResponse]] = {}
        self._size = 0
        #: Counts invalidations: an answer fetched across one is not stored.
        self.generation = 0
        # The forwarded read of an expired answer, by path and query, while it is under way.
        self._refreshing: dict[tuple[str, bytes], asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return self._size

    def get(self, path: str, query: bytes, *, count: bool = True) -> CachedResponse | None:
        """The fresh answer stored for this request, if any (a lookup is counted unless
        `count` is False)."""
        entries = self._paths.get(path)
        entry = None if entries is None else entries.get(query)
        if entry is None or entry.expires_at <= self.clock():
            if count:
                _MISS.inc()
            return None
        if count:
            _HIT.inc()
        return entry

    def refresh_under_way(self, path: str, query: bytes) -> asyncio.Future[None] | None:
        """The forwarded read that another request started for this expired answer, to
        wait for (None: none under way)."""
        return self._refreshing.get((path, query))

    def start_refresh(self, path: str, query: bytes) -> asyncio.Future[None] | None:
        """After a miss, for the request about to forward: when the answer was stored
        (and expired), the others wait for this request's until it calls `end_refresh`
        with what this returns; None for an answer never stored (no one waits)."""
        entries = self._paths.get(path)
        if entries is None or query not in entries or (path, query) in self._refreshing:
            return None
        refresh = self._refreshing[path, query] = asyncio.get_running_loop().create_future()
        return refresh

    def end_refresh(self, path: str, query: bytes, refresh: asyncio.Future[None]) -> None:
        """The refresh is over (its answer stored or not): its waiters go on."""
        if self._refreshing.get((path, query)) is refresh:
            del self._refreshing[path, query]
        refresh.set_result(None)

    def put(
        self, path: str, query: bytes, status: int, headers: RawHeaders, body: bytes, max_age: int
    ) -> None:
        """Store an answer for `max_age` seconds (the caller checked it may be shared)."""
        if max_age <= 0 or len(body) > self.max_body_bytes or self.max_entries <= 0:
            return
        entries = self._paths.setdefault(path, {})
        if query not in entries:
            if self._size >= self.max_entries:
                self._make_room()
                entries = self._paths.setdefault(path, {})
            self._size += 1
        now = self.clock()
        entries[query] = CachedResponse(status, headers, body, now, now + max_age)

    def invalidate(self, path: str) -> None:
        """Drop every answer stored for `path` (with or without a trailing slash)."""
        self.generation += 1
        for each in (path, path[:-1] if path.endswith("/") else path + "/"):
            entries = self._paths.pop(each, None)
            if entries is not None:
                self._size -= len(entries)

    def _make_room(self) -> None:
        now = self.clock()
        for path, entries in list(self._paths.items()):
            fresh = {query: entry for query, entry in entries.items() if entry.expires_at > now}
            self._size -= len(entries) - len(fresh)
            if fresh:
                self._paths[path] = fresh
            else:
                del self._paths[path]
        while self._size >= self.max_entries and self._paths:
            oldest = next(iter(self._paths))
            self._size -= len(self._paths.pop(oldest))
