"""The service defaults as steps: lifespan parts start in order and stop in reverse,
readiness follows the checks the steps add, and a sweep runs in the background."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI

from service_testing import eventually
from shared.auth import AdminClaims, CurrentClaims, TokenClaims
from shared.config import ServiceSettings
from shared.heap import SERVER_THRESHOLDS
from shared.service import Lifespan, ServiceBuilder
from shared.sweeps import RunningSweep, SweepReport


def builder() -> ServiceBuilder:
    settings = ServiceSettings(_env_file=None, service_name="probe_service", environment="test")
    return ServiceBuilder(settings, title="probe")


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        return await client.get(path)


class TestLifespanParts:
    async def test_start_in_the_order_added_and_stop_in_reverse(self) -> None:
        events: list[str] = []

        def part(name: str) -> Lifespan:
            @asynccontextmanager
            async def lifespan(app: FastAPI) -> AsyncIterator[None]:
                events.append(f"start {name}")
                yield
                events.append(f"stop {name}")

            return lifespan

        service = builder()
        for name in ("database", "events", "auth"):
            service.add_lifespan(part(name))

        async with LifespanManager(service.build()):
            assert events == ["start database", "start events", "start auth"]
        assert events[3:] == ["stop auth", "stop events", "stop database"]


class TestSettledHeap:
    async def test_what_the_parts_made_is_frozen_while_the_app_runs(self) -> None:
        kept: list[object] = []

        @asynccontextmanager
        async def cache(app: FastAPI) -> AsyncIterator[None]:
            kept.append({"made": "at startup"})
            yield

        service = builder()
        service.add_lifespan(cache)
        before = gc.get_threshold()
        async with LifespanManager(service.build()):
            # The cyclic collector skips the permanent generation: the part's object is
            # never walked again, and collections of the young come ten times rarer.
            assert gc.get_freeze_count() > 0
            assert not gc.is_finalized(kept[0])
            assert kept[0] not in gc.get_objects(generation=2)
            assert gc.get_threshold() == SERVER_THRESHOLDS
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before

    async def test_cycles_frozen_meanwhile_are_collected_once_it_stops(self) -> None:
        cycle = _Cycle()
        witness = weakref.ref(cycle)
        async with LifespanManager(builder().build()):
            del cycle
            gc.collect()
            assert witness() is not None  # frozen: the collector does not look at it
        gc.collect()
        assert witness() is None


class _Cycle:
    """An object only a reference cycle keeps alive."""

    def __init__(self) -> None:
        self.me = self


class TestReadiness:
    async def test_a_failing_check_is_a_503_and_a_degraded_one_a_200(self) -> None:
        async def fails(app: FastAPI) -> None:
            raise ConnectionError("down")

        async def passes(app: FastAPI) -> None:
            return None

        required = builder()
        required.add_health()
        required.add_ready_check("cache", fails)
        optional = builder()
        optional.add_health()
        optional.add_ready_check("store", passes)
        optional.add_ready_check("broker", fails, degraded=True)

        down = await get(required.build(), "/health/ready")
        degraded = await get(optional.build(), "/health/ready")

        assert down.status_code == 503
        assert down.json()["checks"] == {"cache": "unavailable"}
        assert degraded.status_code == 200
        assert degraded.json() == {
            "status": "degraded",
            "checks": {"store": "ok", "broker": "unavailable"},
        }

    async def test_probes_and_metrics_exist_only_when_added(self) -> None:
        bare = builder().build()
        full = builder()
        full.add_service_defaults()

        assert (await get(bare, "/health/live")).status_code == 404
        assert (await get(bare, "/metrics")).status_code == 404
        assert (await get(full.build(), "/health/live")).json() == {"status": "ok"}
        assert (await get(full.build(), "/metrics")).status_code == 200


@dataclass
class CountReport(SweepReport):
    repaired: int = 0


def test_a_report_is_true_when_the_pass_did_something() -> None:
    assert CountReport(repaired=1)
    assert not CountReport()


class CountingSweeper:
    def __init__(self) -> None:
        self.passes = 0

    async def sweep(self, now: datetime | None = None) -> CountReport:
        self.passes += 1
        if self.passes == 2:
            raise RuntimeError("a failed pass is logged and tried again")
        return CountReport()


class TestSweeper:
    async def test_runs_every_interval_survives_a_failed_pass_and_stops_with_the_app(
        self,
    ) -> None:
        sweeper = CountingSweeper()
        service = builder()
        service.add_sweeper(lambda app: sweeper, name="probe_sweeper", interval_seconds=0.01)
        app = service.build()

        async with LifespanManager(app):
            running = app.state.probe_sweeper
            await eventually(lambda: sweeper.passes >= 4, within=5)
            assert not running.done()
            assert not await running.sweep()  # a pass that repaired nothing is falsy
        assert running.done()
        passes = sweeper.passes
        await asyncio.sleep(0.05)
        assert sweeper.passes == passes

    async def test_stopping_lets_the_pass_in_progress_finish(self) -> None:
        """Cut off in the middle of a write, a pass could leave its transaction open
        (and SQLite locked) until a garbage collection."""
        started, go_on = asyncio.Event(), asyncio.Event()
        finished: list[bool] = []

        class SlowSweeper:
            async def sweep(self, now: datetime | None = None) -> CountReport:
                started.set()
                await go_on.wait()
                finished.append(True)
                return CountReport(repaired=1)

        running = RunningSweep(SlowSweeper(), name="slow", interval_seconds=60)
        running.start()
        await asyncio.wait_for(started.wait(), 5)

        stopping = asyncio.create_task(running.stop())
        await asyncio.sleep(0.1)
        assert not stopping.done()
        go_on.set()
        await asyncio.wait_for(stopping, 5)

        assert finished == [True]
        assert running.done()

    async def test_stopping_between_passes_does_not_wait_for_the_next(self) -> None:
        sweeper = CountingSweeper()
        running = RunningSweep(sweeper, name="idle", interval_seconds=3600)
        running.start()
        await eventually(lambda: sweeper.passes == 1, within=5)

        await asyncio.wait_for(running.stop(), 1)

        assert running.done()
        assert sweeper.passes == 1


async def admin_through_another(claims: AdminClaims) -> TokenClaims:
    return claims


class TestDocumentedAnswers:
    def test_routes_for_administrators_say_403_and_others_do_not(self) -> None:
        router = APIRouter(prefix="/v1/things")

        @router.get("")
        async def list_things(_: CurrentClaims) -> list[str]:
            return []

        @router.post("")
        async def add_thing(_: AdminClaims) -> None: ...

        @router.delete("/{name}")
        async def remove_thing(
            name: str, _: Annotated[TokenClaims, Depends(admin_through_another)]
        ) -> None: ...

        service = builder()
        service.add_routers(router)
        paths = service.build().openapi()["paths"]
        assert "403" not in paths["/v1/things"]["get"]["responses"]
        for operation in (paths["/v1/things"]["post"], paths["/v1/things/{name}"]["delete"]):
            assert operation["responses"]["403"]["content"] == {"application/problem+json": {}}


class TestMethodNotAllowed:
    async def test_allow_names_every_method_of_the_path(self) -> None:
        router = APIRouter(prefix="/v1/cart")

        @router.get("")
        async def show() -> list[str]:
            return []

        @router.delete("")
        async def clear() -> None: ...

        @router.put("/items/{item}")
        async def put_item(item: str) -> None: ...

        service = builder()
        service.add_routers(router)
        transport = httpx.ASGITransport(app=service.build())
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            cart = await client.post("/v1/cart")
            item = await client.get("/v1/cart/items/a")
        assert cart.status_code == 405
        assert cart.headers["allow"] == "DELETE, GET"
        assert cart.headers["content-type"] == "application/problem+json"
        assert (item.status_code, item.headers["allow"]) == (405, "PUT")
