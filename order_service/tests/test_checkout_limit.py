"""The limit on checkouts running at once in a process: the others wait their turn in
order, and a request gives up (503) only when its time budget would not last."""

from __future__ import annotations

import asyncio

import pytest

from order_service.checkout import CheckoutLimit
from order_service.errors import CheckoutsBusy
from shared.deadline import request_deadline


async def _hold(limit: CheckoutLimit, taken: asyncio.Event, release: asyncio.Event) -> None:
    async with limit.turn():
        taken.set()
        await release.wait()


class TestCheckoutLimit:
    async def test_waiting_checkouts_get_their_turns_in_order(self) -> None:
        limit = CheckoutLimit(1)
        taken, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(limit, taken, release))
        await taken.wait()
        entered: list[int] = []

        async def checkout(number: int) -> None:
            async with limit.turn():
                entered.append(number)

        waiting = []
        for number in range(3):
            waiting.append(asyncio.create_task(checkout(number)))
            await asyncio.sleep(0)  # each starts waiting before the next arrives
        assert entered == []

        release.set()
        await asyncio.gather(holder, *waiting)
        assert entered == [0, 1, 2]

    async def test_a_request_out_of_time_gives_up_its_place(self) -> None:
        limit = CheckoutLimit(1)
        taken, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(limit, taken, release))
        await taken.wait()

        # A budget that leaves it a moment to wait, not enough to check out after.
        with (
            request_deadline(CheckoutLimit.MIN_SECONDS_TO_START + 0.05),
            pytest.raises(CheckoutsBusy) as refused,
        ):
            async with limit.turn():
                pytest.fail("it was given a turn")
        assert refused.value.status_code == 503
        assert refused.value.headers["Retry-After"] == "1"

        release.set()
        await holder
        async with limit.turn():  # the place it gave up is not held by anyone
            pass

    async def test_without_a_budget_it_waits_for_as_long_as_it_takes(self) -> None:
        limit = CheckoutLimit(1)
        taken, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(limit, taken, release))
        await taken.wait()

        waiter = asyncio.create_task(_hold(limit, asyncio.Event(), asyncio.Event()))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        waiter.cancel()
        release.set()
        await holder
