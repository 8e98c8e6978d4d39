"""The public product document is served from memory, and writes are seen at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from prometheus_client import REGISTRY

from product_service.cache import ProductCache
from product_service.cached_reads import anonymous_product_read
from service_testing import assert_problem
from shared.errors import ServiceUnavailable

ROUTE = "/v1/products/{product_id}"


def cache_hits(app: FastAPI) -> float:
    from product_service.cache import CACHE_LOOKUPS

    return CACHE_LOOKUPS.labels("hit")._value.get()


def cache_misses() -> float:
    return REGISTRY.get_sample_value("product_cache_lookups_total", {"result": "miss"}) or 0.0


def served(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


class TestProductCache:
    async def test_second_read_comes_from_the_cache(
        self, app: FastAPI, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        first = await client.get(f"/v1/products/{product['id']}")
        hits = cache_hits(app)
        second = await client.get(f"/v1/products/{product['id']}")
        assert cache_hits(app) == hits + 1
        assert second.json() == first.json() == product

    async def test_an_update_is_visible_at_once(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        patched = await client.patch(
            f"/v1/products/{product['id']}", json={"price": "3.21"}, headers=admin
        )
        assert patched.status_code == 200
        assert (await client.get(f"/v1/products/{product['id']}")).json()["price"] == "3.21"

    async def test_a_deactivated_product_is_gone_at_once(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        await client.delete(f"/v1/products/{product['id']}", headers=admin)
        assert_problem(await client.get(f"/v1/products/{product['id']}"), 404)

    async def test_administrators_read_past_the_cache(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        await client.delete(f"/v1/products/{product['id']}", headers=admin)
        response = await client.get(f"/v1/products/{product['id']}", headers=admin)
        assert response.json()["is_active"] is False


class TestSharedCaching:
    """A cached document's answer lets a shared cache in front (the gateway's) keep it
    for as long as this cache does, and no longer."""

    async def test_an_anonymous_read_may_be_shared_for_the_seconds_left(
        self, app: FastAPI, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        ttl = app.state.settings.product_cache_seconds
        routed = await client.get(f"/v1/products/{product['id']}")
        cached = await client.get(f"/v1/products/{product['id']}")
        for response in (routed, cached):
            visibility, max_age = response.headers["cache-control"].split(", ")
            assert visibility == "public"
            assert 0 <= int(max_age.removeprefix("max-age=")) <= ttl
        # Whole seconds, rounded down: never longer than this cache keeps it.
        assert routed.headers["cache-control"] in {
            f"public, max-age={int(ttl)}",
            f"public, max-age={int(ttl) - 1}",
        }

    async def test_an_inactive_product_is_not_shared(
        self, client: AsyncClient, admin: dict[str, str], make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.delete(f"/v1/products/{product['id']}", headers=admin)
        response = await client.get(f"/v1/products/{product['id']}", headers=admin)
        assert response.status_code == 200
        assert "cache-control" not in response.headers

    async def test_with_the_cache_off_nothing_is_shared(
        self, app: FastAPI, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        cache = app.state.product_cache
        ttl, cache.ttl_seconds = cache.ttl_seconds, 0
        try:
            response = await client.get(f"/v1/products/{product['id']}")
        finally:
            cache.ttl_seconds = ttl
        assert response.status_code == 200
        assert "cache-control" not in response.headers


class TestCachedReads:
    """A cached product's anonymous read is answered before the framework routes it, with
    what the route itself answers."""

    async def test_same_answer_as_the_route_with_request_id_and_metrics(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        routed = await client.get(f"/v1/products/{product['id']}")
        count = served(ROUTE, "200")

        cached = await client.get(
            f"/v1/products/{product['id']}", headers={"X-Request-ID": "read-1"}
        )

        assert cached.status_code == 200
        assert cached.content == routed.content
        assert cached.headers["content-type"] == routed.headers["content-type"]
        assert cached.headers["content-length"] == routed.headers["content-length"]
        assert cached.headers["cache-control"].startswith("public, max-age=")
        assert cached.headers["x-request-id"] == "read-1"
        assert served(ROUTE, "200") == count + 1

    async def test_a_miss_is_counted_once(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        misses = cache_misses()
        await client.get(f"/v1/products/{product['id']}")
        assert cache_misses() == misses + 1

    async def test_a_bad_token_is_still_refused(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        response = await client.get(
            f"/v1/products/{product['id']}", headers={"Authorization": "Bearer nonsense"}
        )
        assert_problem(response, 401)

    async def test_other_spellings_of_an_id_go_to_the_route(
        self, client: AsyncClient, make_product: Callable[..., Any]
    ) -> None:
        product = await make_product()
        await client.get(f"/v1/products/{product['id']}")
        assert_problem(await client.get(f"/v1/products/{product['id']}x"), 422)
        trailing = await client.get(f"/v1/products/{product['id']}/")
        assert trailing.status_code != 200


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


class TestAnonymousProductRead:
    product_id = uuid.UUID("0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10")

    def test_an_anonymous_get_of_one_product(self) -> None:
        for spelled in (str(self.product_id), str(self.product_id).upper()):
            request = scope("GET", f"/v1/products/{spelled}")
            assert anonymous_product_read(request) == self.product_id

    @pytest.mark.parametrize(
        ("method", "path", "headers"),
        [
            (
                "GET",
                "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10",
                [(b"authorization", b"Bearer x")],
            ),
            ("PATCH", "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10", []),
            ("HEAD", "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10", []),
            ("GET", "/v1/products/0b7e4c524a1f4f0e9a432f7d3c1e9b10", []),
            ("GET", "/v1/products/{0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b1}", []),
            ("GET", "/v1/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b1z", []),
            ("GET", "/v1/products", []),
            ("GET", "/internal/products/0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10", []),
        ],
    )
    def test_anything_else_is_left_to_the_app(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        assert anonymous_product_read(scope(method, path, headers)) is None


class TestRefreshAhead:
    """An entry read in its last fifth is read again in the background, once at a time,
    so a product read all the time never expires under its readers."""

    @staticmethod
    def cache_with(loader: Any, *, left: float) -> tuple[ProductCache, uuid.UUID]:
        """A cache of one entry with `left` seconds to live (of 10), refreshed by `loader`."""
        cache = ProductCache(10.0)
        cache.load_with(loader)
        product_id = uuid.uuid4()
        cache.put(product_id, b"old")
        cache._entries[product_id] = cache._entries[product_id]._replace(
            expires_at=time.monotonic() + left
        )
        return cache, product_id

    async def test_a_fresh_entry_is_not_read_again(self) -> None:
        loads: list[uuid.UUID] = []

        async def load(product_id: uuid.UUID) -> bytes:
            loads.append(product_id)
            return b"new"

        cache, product_id = self.cache_with(load, left=5.0)
        assert cache.get(product_id).document == b"old"  # type: ignore[union-attr]
        await cache.aclose()
        assert loads == []

    async def test_readers_of_an_entry_about_to_expire_start_one_read(self) -> None:
        loads: list[uuid.UUID] = []
        release = asyncio.Event()

        async def load(product_id: uuid.UUID) -> bytes:
            loads.append(product_id)
            await release.wait()
            return b"new"

        cache, product_id = self.cache_with(load, left=1.0)
        answers = [cache.get(product_id) for _ in range(100)]
        await asyncio.sleep(0)
        release.set()
        await wait_for_refreshes(cache)

        # Every reader had the entry it found; the one read replaced it for a full ttl.
        assert {answer.document for answer in answers if answer} == {b"old"}
        assert loads == [product_id]
        refreshed = cache.get(product_id)
        assert refreshed is not None
        assert refreshed.document == b"new"
        assert refreshed.expires_at - time.monotonic() > 9

    async def test_a_product_gone_or_inactive_leaves_the_cache(self) -> None:
        async def load(product_id: uuid.UUID) -> None:
            return None

        cache, product_id = self.cache_with(load, left=1.0)
        cache.get(product_id)
        await wait_for_refreshes(cache)
        assert cache.get(product_id) is None

    async def test_a_write_during_the_read_drops_what_it_read(self) -> None:
        """The read may have seen the product before the write: its document must not
        come back into the cache after the write dropped the entry."""
        started, release = asyncio.Event(), asyncio.Event()

        async def load(product_id: uuid.UUID) -> bytes:
            started.set()
            await release.wait()
            return b"before the write"

        cache, product_id = self.cache_with(load, left=1.0)
        cache.get(product_id)
        await started.wait()
        cache.invalidate(product_id)
        release.set()
        await wait_for_refreshes(cache)
        assert cache.get(product_id) is None

    async def test_a_failed_read_keeps_the_entry_and_a_later_reader_tries_again(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        outcomes: list[bytes | Exception] = [ConnectionError("database down"), b"new"]

        async def load(product_id: uuid.UUID) -> bytes:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        cache, product_id = self.cache_with(load, left=1.0)
        cache.get(product_id)
        await wait_for_refreshes(cache)
        assert "reading product" in caplog.text
        assert cache.get(product_id).document == b"old"  # type: ignore[union-attr]
        await wait_for_refreshes(cache)
        assert cache.get(product_id).document == b"new"  # type: ignore[union-attr]

    async def test_closing_stops_the_refreshes(self) -> None:
        async def load(product_id: uuid.UUID) -> bytes:
            await asyncio.Event().wait()  # a read that never ends
            return b"new"

        cache, product_id = self.cache_with(load, left=1.0)
        cache.get(product_id)
        await cache.aclose()
        assert cache.get(product_id).document == b"old"  # type: ignore[union-attr]
        assert not cache._reading


class TestSharedReads:
    """Readers of a product missing from the cache share one database read."""

    async def test_concurrent_misses_make_one_read(self) -> None:
        loads: list[uuid.UUID] = []

        async def load(product_id: uuid.UUID) -> bytes:
            loads.append(product_id)
            await asyncio.sleep(0)
            return b"doc"

        cache = ProductCache(10.0)
        cache.load_with(load)
        product_id = uuid.uuid4()
        entries = await asyncio.gather(*(cache.fetch(product_id) for _ in range(100)))
        assert loads == [product_id]
        assert {entry.document for entry in entries if entry} == {b"doc"}
        assert cache.get(product_id) == entries[0]

    async def test_a_product_gone_is_none_and_not_kept(self) -> None:
        async def load(product_id: uuid.UUID) -> None:
            return None

        cache = ProductCache(10.0)
        cache.load_with(load)
        assert await cache.fetch(uuid.uuid4()) is None

    async def test_a_closed_cache_answers_service_unavailable(self) -> None:
        async def load(product_id: uuid.UUID) -> bytes:
            return b"doc"

        cache = ProductCache(10.0)
        cache.load_with(load)
        await cache.aclose()
        with pytest.raises(ServiceUnavailable) as raised:
            await cache.fetch(uuid.uuid4())
        assert raised.value.headers == {"Retry-After": "1"}

    async def test_a_write_during_the_read_makes_its_readers_read_again(self) -> None:
        started, release = asyncio.Event(), asyncio.Event()
        documents = [b"before the write", b"after the write"]

        async def load(product_id: uuid.UUID) -> bytes:
            document = documents.pop(0)  # what the database has when the read starts
            started.set()
            await release.wait()
            return document

        cache = ProductCache(10.0)
        cache.load_with(load)
        product_id = uuid.uuid4()
        reader = asyncio.create_task(cache.fetch(product_id))
        await started.wait()
        cache.invalidate(product_id)
        release.set()
        entry = await reader
        assert entry is not None
        assert entry.document == b"after the write"

    async def test_a_reader_that_goes_away_leaves_the_read_to_the_others(self) -> None:
        release = asyncio.Event()

        async def load(product_id: uuid.UUID) -> bytes:
            await release.wait()
            return b"doc"

        cache = ProductCache(10.0)
        cache.load_with(load)
        product_id = uuid.uuid4()
        leaving = asyncio.create_task(cache.fetch(product_id))
        staying = asyncio.create_task(cache.fetch(product_id))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        release.set()
        entry = await staying
        assert leaving.cancelled()
        assert entry is not None
        assert entry.document == b"doc"

    async def test_a_failed_read_fails_its_readers(self) -> None:
        async def load(product_id: uuid.UUID) -> bytes:
            raise ConnectionError("database down")

        cache = ProductCache(10.0)
        cache.load_with(load)
        with pytest.raises(ConnectionError):
            await cache.fetch(uuid.uuid4())


async def wait_for_refreshes(cache: ProductCache) -> None:
    await asyncio.gather(*cache._reading.values(), return_exceptions=True)
