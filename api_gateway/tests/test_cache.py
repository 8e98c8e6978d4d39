"""Anonymous reads a service marks as shareable are answered by the gateway itself, for
as long as the service said, and a write through the gateway is read back at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from api_gateway.cache import ResponseCache, asks_for_a_fresh_answer, shared_max_age
from service_testing import LocalTokens

SHAREABLE = "/api/v1/products/shareable"


def calls(upstreams: dict[str, Any]) -> int:
    return sum(1 for method, _ in upstreams["product"].requests if method == "GET")


def hits() -> float:
    return REGISTRY.get_sample_value("gateway_cache_lookups_total", {"result": "hit"}) or 0.0


class TestSharedAnswers:
    async def test_a_second_read_is_the_gateways_own(self, gateway, upstreams) -> None:
        first = await gateway.get(SHAREABLE, headers={"X-Request-ID": "read-1"})
        counted = hits()
        second = await gateway.get(SHAREABLE, headers={"X-Request-ID": "read-2"})

        assert calls(upstreams) == 1
        assert hits() == counted + 1
        assert second.status_code == 200
        assert second.content == first.content
        assert second.headers["cache-control"] == "public, max-age=60"
        assert second.headers["content-type"] == first.headers["content-type"]
        assert int(second.headers["age"]) >= 0
        assert "age" not in first.headers
        # Each answer is its own request's: the request id is never the stored one.
        assert (first.headers["x-request-id"], second.headers["x-request-id"]) == (
            "read-1",
            "read-2",
        )

    async def test_each_query_is_an_answer_of_its_own(self, gateway, upstreams) -> None:
        one = await gateway.get(SHAREABLE, params={"page": "1"})
        two = await gateway.get(SHAREABLE, params={"page": "2"})
        again = await gateway.get(SHAREABLE, params={"page": "1"})
        assert calls(upstreams) == 2
        assert (one.json()["query"], two.json()["query"]) == ("page=1", "page=2")
        assert again.json() == one.json()

    async def test_a_reader_with_a_token_always_reaches_the_service(
        self, gateway, upstreams, tokens: LocalTokens
    ) -> None:
        await gateway.get(SHAREABLE)
        await gateway.get(SHAREABLE, headers=tokens.headers())
        await gateway.get(SHAREABLE, headers=tokens.headers())
        assert calls(upstreams) == 3

    @pytest.mark.parametrize("asked", ["no-cache", "max-age=0"])
    async def test_a_reader_asking_for_a_fresh_answer_gets_one_and_it_is_kept(
        self, gateway, upstreams, asked: str
    ) -> None:
        await gateway.get(SHAREABLE)
        fresh = await gateway.get(SHAREABLE, headers={"Cache-Control": asked})
        after = await gateway.get(SHAREABLE)
        assert calls(upstreams) == 2
        assert fresh.json()["call"] == 2
        assert after.json() == fresh.json()

    @pytest.mark.parametrize(
        "query",
        [
            {"cache_control": "no-store"},
            {"cache_control": "private, max-age=60"},
            {"cache_control": "public, no-cache, max-age=60"},
            {"cache_control": "public, max-age=0"},
            {"cache_control": "max-age=60"},
            {"cache_control": "public, max-age=soon"},
            {"cookie": "1"},
            {"vary": "1"},
        ],
        ids=["no-store", "private", "no-cache", "max-age=0", "not-public", "bad", "cookie", "vary"],
    )
    async def test_what_the_service_does_not_share_is_not_kept(
        self, gateway, upstreams, query: dict[str, str]
    ) -> None:
        for _ in range(2):
            assert (await gateway.get(SHAREABLE, params=query)).status_code == 200
        assert calls(upstreams) == 2

    async def test_only_a_200_is_kept(self, gateway, upstreams) -> None:
        upstreams["product"].fail_status = 404
        upstreams["product"].fail_headers = {"cache-control": "public, max-age=60"}
        for _ in range(2):
            assert (await gateway.get("/api/v1/products/gone")).status_code == 404
        assert len(upstreams["product"].requests) == 2

    async def test_routes_that_need_a_token_are_never_kept(
        self, gateway, upstreams, tokens: LocalTokens
    ) -> None:
        headers = tokens.headers()
        for _ in range(2):
            response = await gateway.get("/api/v1/orders/shareable", headers=headers)
            assert response.status_code == 200
        assert len(upstreams["order"].requests) == 2

    async def test_a_cache_of_no_entries_is_off(self, make_gateway, upstreams) -> None:
        async with make_gateway(response_cache_entries=0) as gateway:
            for _ in range(2):
                await gateway.get(SHAREABLE)
        assert calls(upstreams) == 2


class TestWritesThroughTheGateway:
    @pytest.mark.parametrize("method", ["PATCH", "DELETE"])
    async def test_a_write_is_read_back_at_once(
        self, gateway, upstreams, tokens: LocalTokens, method: str
    ) -> None:
        await gateway.get(SHAREABLE, params={"page": "1"})
        await gateway.get(SHAREABLE, params={"page": "2"})
        written = await gateway.request(method, SHAREABLE, headers=tokens.headers(role="admin"))
        assert written.status_code == 200
        after = await gateway.get(SHAREABLE, params={"page": "1"})
        assert calls(upstreams) == 3
        assert after.json()["call"] == 4  # the write was the third call

    async def test_a_read_that_raced_a_write_is_not_kept(
        self, gateway, upstreams, tokens: LocalTokens
    ) -> None:
        # The read is answered after the write began: its answer may predate the write.
        read = asyncio.create_task(gateway.get(SHAREABLE, params={"seconds": "0.3"}))
        await asyncio.sleep(0.1)
        await gateway.patch(SHAREABLE, headers=tokens.headers(role="admin"))
        assert (await read).status_code == 200
        await gateway.get(SHAREABLE, params={"seconds": "0.3"})
        assert calls(upstreams) == 2


class TestCollapsedForwarding:
    """When a kept answer expires, the reads of it in flight wait for one forwarded read
    rather than each going to the service."""

    async def test_readers_of_an_expired_answer_share_one_forwarded_read(
        self, gateway, upstreams
    ) -> None:
        params = {"cache_control": "public, max-age=1", "seconds": "0.2"}
        assert (await gateway.get(SHAREABLE, params=params)).json()["call"] == 1
        await asyncio.sleep(1.05)  # the kept answer expires

        answers = await asyncio.gather(*(gateway.get(SHAREABLE, params=params) for _ in range(20)))

        assert calls(upstreams) == 2
        assert {answer.status_code for answer in answers} == {200}
        assert {answer.json()["call"] for answer in answers} == {2}

    async def test_reads_of_what_was_never_kept_are_not_held_back(self, gateway, upstreams) -> None:
        params = {"cache_control": "private", "seconds": "0.2"}
        answers = await asyncio.gather(*(gateway.get(SHAREABLE, params=params) for _ in range(5)))
        assert calls(upstreams) == 5
        assert {answer.status_code for answer in answers} == {200}


class TestSharedMaxAge:
    @pytest.mark.parametrize(
        ("headers", "seconds"),
        [
            ([(b"cache-control", b"public, max-age=5")], 5),
            ([(b"cache-control", b"Public, Max-Age=7")], 7),
            ([(b"cache-control", b"public"), (b"cache-control", b"max-age=9")], 9),
            ([(b"cache-control", b"public, max-age=60, s-maxage=2")], 2),
            ([(b"cache-control", b"max-age=60")], 0),
            ([(b"cache-control", b"public")], 0),
            ([(b"cache-control", b"public, max-age=60, private")], 0),
            ([(b"cache-control", b"public, max-age=60, no-store")], 0),
            ([(b"cache-control", b"public, max-age=-1")], 0),
            ([(b"cache-control", b"public, max-age=60"), (b"vary", b"accept")], 0),
            ([(b"cache-control", b"public, max-age=60"), (b"set-cookie", b"a=b")], 0),
            ([], 0),
        ],
    )
    def test_only_an_answer_said_to_be_shareable_has_an_age(
        self, headers: list[tuple[bytes, bytes]], seconds: int
    ) -> None:
        assert shared_max_age(headers) == seconds

    @pytest.mark.parametrize(
        ("asked", "fresh"),
        [(None, False), (b"max-age=60", False), (b"no-cache", True), (b"No-Cache", True)],
    )
    def test_a_reader_may_ask_past_the_cache(self, asked: bytes | None, fresh: bool) -> None:
        assert asks_for_a_fresh_answer(asked) is fresh


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestResponseCache:
    def cache(self, clock: Clock, entries: int = 10, body_bytes: int = 100) -> ResponseCache:
        return ResponseCache(entries, body_bytes, clock=clock)

    def test_an_answer_is_kept_for_its_max_age_with_its_age(self) -> None:
        clock = Clock()
        cache = self.cache(clock)
        cache.put("/v1/a", b"", 200, [(b"content-type", b"x")], b"body", 5)
        clock.now += 3.7
        kept = cache.get("/v1/a", b"")
        assert kept is not None
        assert kept.body == b"body"
        assert kept.headers_at(clock.now) == [(b"content-type", b"x"), (b"age", b"3")]
        clock.now += 1.3
        assert cache.get("/v1/a", b"") is None

    def test_too_large_or_ageless_answers_are_not_kept(self) -> None:
        cache = self.cache(Clock(), body_bytes=3)
        cache.put("/v1/a", b"", 200, [], b"four", 5)
        cache.put("/v1/b", b"", 200, [], b"one", 0)
        assert len(cache) == 0

    def test_invalidating_a_path_drops_every_query_and_the_slashed_twin(self) -> None:
        cache = self.cache(Clock())
        for path, query in [("/v1/a", b""), ("/v1/a", b"x=1"), ("/v1/a/", b""), ("/v1/b", b"")]:
            cache.put(path, query, 200, [], b"", 5)
        generation = cache.generation
        cache.invalidate("/v1/a")
        assert cache.generation == generation + 1
        assert len(cache) == 1
        assert cache.get("/v1/b", b"") is not None
        assert cache.get("/v1/a", b"x=1") is None

    def test_a_full_cache_drops_stale_answers_first_then_the_oldest(self) -> None:
        clock = Clock()
        cache = self.cache(clock, entries=3)
        cache.put("/v1/old", b"", 200, [], b"", 100)
        cache.put("/v1/stale", b"", 200, [], b"", 1)
        cache.put("/v1/young", b"", 200, [], b"", 100)
        clock.now += 2
        cache.put("/v1/new", b"", 200, [], b"", 100)
        assert len(cache) == 3
        assert cache.get("/v1/old", b"") is not None
        cache.put("/v1/newer", b"", 200, [], b"", 100)
        assert len(cache) == 3
        assert cache.get("/v1/old", b"") is None
        assert [cache.get(p, b"") is not None for p in ("/v1/young", "/v1/new", "/v1/newer")] == [
            True,
            True,
            True,
        ]

    async def test_one_request_refreshes_an_expired_answer_and_the_others_wait(self) -> None:
        clock = Clock()
        cache = self.cache(clock)
        assert cache.start_refresh("/v1/a", b"") is None  # never kept: no one waits
        cache.put("/v1/a", b"", 200, [], b"body", 5)
        clock.now += 6
        refresh = cache.start_refresh("/v1/a", b"")
        assert refresh is not None
        assert cache.start_refresh("/v1/a", b"") is None
        assert cache.refresh_under_way("/v1/a", b"") is refresh
        assert cache.refresh_under_way("/v1/a", b"q") is None
        cache.end_refresh("/v1/a", b"", refresh)
        assert refresh.done()
        assert cache.refresh_under_way("/v1/a", b"") is None

    def test_replacing_an_answer_does_not_count_twice(self) -> None:
        cache = self.cache(Clock(), entries=2)
        for _ in range(3):
            cache.put("/v1/a", b"", 200, [], b"", 5)
        assert len(cache) == 1
