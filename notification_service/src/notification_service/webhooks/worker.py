"""The delivery worker: one per process, it claims due deliveries (leases in the
database, so replicas share the work), sends each with the process's one HTTP client
and records every attempt.

Isolation: at most `webhook_endpoint_concurrency` attempts per endpoint and
`webhook_concurrency` in all are in flight in one process, each bounded by
`webhook_timeout_seconds`; an endpoint at its limit is left out of the next claims, so a
slow or dead endpoint holds its own slots only and never the others' (nor the e-mails,
which the event consumer sends without waiting for any webhook).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from datetime import timedelta

from notification_service.models import DeliveryStatus, WebhookEndpoint
from notification_service.webhooks.metrics import (
    WEBHOOK_ATTEMPT_SECONDS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_LATENCY_SECONDS,
    WEBHOOK_OLDEST_PENDING_SECONDS,
    WEBHOOK_PENDING,
)
from notification_service.webhooks.repository import (
    ClaimedDelivery,
    DeliveryRepository,
    EndpointRepository,
    Outcome,
)
from notification_service.webhooks.schedule import (
    Verdict,
    judge,
    next_attempt_at,
    parse_retry_after,
    retry_delay,
)
from notification_service.webhooks.sender import Attempt, WebhookSender
from notification_service.webhooks.signing_secrets import SecretBox, SecretUnreadable
from shared.db import Database, utcnow
from shared.sweeps import finish_or_cancel
from shared.tracing import untraced

logger = logging.getLogger(__name__)

#: A lease outlives the attempt it covers by this much (decrypting, DNS, recording).
LEASE_MARGIN_SECONDS = 30.0
BACKLOG_REFRESH_SECONDS = 5.0
#: Pause after the database failed a claim.
CLAIM_ERROR_PAUSE_SECONDS = 2.0
#: Tries to record an attempt that happened (a busy SQLite, a failover): an attempt
#: not recorded is sent again once its lease runs out. Pauses 0.25, 0.5, 1, 2 s.
RECORD_TRIES = 5


class DeliveryWorker:
    def __init__(
        self,
        database: Database,
        sender: WebhookSender,
        secret_box: SecretBox,
        *,
        deliveries_due: asyncio.Event,
        concurrency: int,
        endpoint_concurrency: int,
        poll_seconds: float,
        retry_base_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self.database = database
        self.sender = sender
        self.secret_box = secret_box
        #: Set by whoever makes a delivery due (the event handlers after their commit,
        #: a manual retry) and by every finished attempt (a slot is free): claim now.
        self.deliveries_due = deliveries_due
        self.concurrency = concurrency
        self.endpoint_concurrency = endpoint_concurrency
        self.poll_seconds = poll_seconds
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.lease = timedelta(seconds=sender.timeout_seconds + LEASE_MARGIN_SECONDS)
        self._in_flight: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._recording: set[asyncio.Task[bool]] = set()
        self._per_endpoint: Counter[uuid.UUID] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="webhook-delivery-worker")

    async def stop(self) -> None:
        """Stop claiming, abandon the attempts in flight and give their leases back, so
        that the next process to start (or another replica) sends them at once.

        The loop is asked to stop and finishes the pass it is in: cancelled in the middle
        of its claim, the claim's connection was dropped with its transaction open, and
        on SQLite that held the write lock until the garbage collector found it."""
        if self._task is not None:
            self._stopping = True
            self.deliveries_due.set()
            await finish_or_cancel(self._task)
            self._task = None
        abandoned = list(self._in_flight.values())
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        # Attempts that were sent are recorded (never cut off mid-write, which could
        # leave SQLite locked); the release below then skips them (lease gone).
        await asyncio.gather(*self._recording, return_exceptions=True)
        if abandoned:
            try:
                async with self.database.sessionmaker() as session:
                    await DeliveryRepository(session).release(abandoned)
                    await session.commit()
            except Exception:
                logger.warning("leases could not be given back; they run out", exc_info=True)

    async def _run(self) -> None:
        refresh_backlog_at = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self.deliveries_due.clear()
            with untraced():
                started = await self._claim_and_start()
                if loop.time() >= refresh_backlog_at:
                    await self._refresh_backlog()
                    refresh_backlog_at = loop.time() + BACKLOG_REFRESH_SECONDS
            if self._stopping:
                break
            if started and len(self._in_flight) < self.concurrency:
                continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self.deliveries_due.wait()

    async def _claim_and_start(self) -> int:
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        busy = [
            endpoint
            for endpoint, count in self._per_endpoint.items()
            if count >= self.endpoint_concurrency
        ]
        try:
            async with self.database.sessionmaker() as session:
                repository = DeliveryRepository(session)
                claimed = await repository.claim(
                    now=utcnow(), limit=free, lease=self.lease, skip_endpoints=busy
                )
                keep, extra = self._within_endpoint_limits(claimed)
                if extra:
                    await repository.release(extra)
                endpoints = await EndpointRepository(session).get_many(
                    {delivery.endpoint_id for delivery in keep}
                )
                await session.commit()
        except Exception:
            logger.warning("due webhook deliveries could not be claimed", exc_info=True)
            await asyncio.sleep(CLAIM_ERROR_PAUSE_SECONDS)
            return 0
        for delivery in keep:
            endpoint = endpoints[delivery.endpoint_id]
            self._per_endpoint[delivery.endpoint_id] += 1
            task = asyncio.create_task(self._deliver(delivery, endpoint))
            self._in_flight[task] = delivery
            task.add_done_callback(self._finished)
        return len(keep)

    def _within_endpoint_limits(
        self, claimed: list[ClaimedDelivery]
    ) -> tuple[list[ClaimedDelivery], list[ClaimedDelivery]]:
        taken: Counter[uuid.UUID] = Counter()
        keep: list[ClaimedDelivery] = []
        extra: list[ClaimedDelivery] = []
        for delivery in claimed:
            endpoint = delivery.endpoint_id
            if self._per_endpoint[endpoint] + taken[endpoint] < self.endpoint_concurrency:
                taken[endpoint] += 1
                keep.append(delivery)
            else:
                extra.append(delivery)
        return keep, extra

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._in_flight.pop(task, None)
        if delivery is not None:
            self._per_endpoint[delivery.endpoint_id] -= 1
            if self._per_endpoint[delivery.endpoint_id] <= 0:
                del self._per_endpoint[delivery.endpoint_id]
        if not task.cancelled() and task.exception() is not None:
            logger.error("a webhook delivery task failed", exc_info=task.exception())
        self.deliveries_due.set()

    async def _deliver(self, delivery: ClaimedDelivery, endpoint: WebhookEndpoint) -> None:
        try:
            secret = self.secret_box.decrypt(endpoint.secret_encrypted)
        except SecretUnreadable as error:
            attempt = Attempt(None, str(error), 0)
        else:
            attempt = await self.sender.send(
                endpoint.url, secret, str(delivery.event_id), delivery.payload
            )
        WEBHOOK_ATTEMPT_SECONDS.observe(attempt.duration_ms / 1000)
        outcome = self._outcome(delivery, attempt)
        recording = asyncio.create_task(self._record(delivery, outcome))
        self._recording.add(recording)
        recording.add_done_callback(self._recording.discard)
        if not await asyncio.shield(recording):
            logger.warning(
                "a webhook attempt finished after its lease ran out; not recorded",
                extra={"delivery_id": str(delivery.id)},
            )
            return
        self._count(delivery, outcome)

    async def _record(self, delivery: ClaimedDelivery, outcome: Outcome) -> bool:
        pause = 0.25
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                async with self.database.sessionmaker() as session:
                    repository = DeliveryRepository(session)
                    recorded = await repository.record(delivery, outcome, now=utcnow())
                    await session.commit()
            except Exception:
                if attempt == RECORD_TRIES:
                    raise
                logger.warning(
                    "a webhook attempt could not be recorded; trying again",
                    exc_info=True,
                    extra={"delivery_id": str(delivery.id), "retry_in_seconds": pause},
                )
                await asyncio.sleep(pause)
                pause *= 2
            else:
                return recorded
        raise AssertionError("unreachable")  # pragma: no cover

    def _outcome(self, delivery: ClaimedDelivery, attempt: Attempt) -> Outcome:
        verdict = judge(attempt.response_status)
        now = utcnow()
        next_at = None
        if verdict is Verdict.RETRY:
            delay = retry_delay(
                delivery.attempts + 1,
                base=self.retry_base_seconds,
                maximum=self.retry_max_seconds,
                retry_after=parse_retry_after(attempt.retry_after),
            )
            next_at = next_attempt_at(now, delivery.retry_until, delay)
        if verdict is Verdict.SUCCEEDED:
            status = DeliveryStatus.SUCCEEDED
        elif next_at is not None:
            status = DeliveryStatus.PENDING
        else:
            status = DeliveryStatus.FAILED
        return Outcome(
            status=status,
            response_status=attempt.response_status,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
            next_attempt_at=next_at,
        )

    def _count(self, delivery: ClaimedDelivery, outcome: Outcome) -> None:
        context = {
            "delivery_id": str(delivery.id),
            "webhook_id": str(delivery.endpoint_id),
            "event_id": str(delivery.event_id),
            "event_type": delivery.event_type,
            "attempt": delivery.attempts + 1,
            "response_status": outcome.response_status,
        }
        if outcome.status is DeliveryStatus.SUCCEEDED:
            WEBHOOK_ATTEMPTS.labels("succeeded").inc()
            WEBHOOK_DELIVERIES.labels("succeeded").inc()
            WEBHOOK_DELIVERY_LATENCY_SECONDS.observe(
                (utcnow() - delivery.created_at).total_seconds()
            )
            logger.info("webhook delivered", extra=context)
        elif outcome.status is DeliveryStatus.PENDING:
            WEBHOOK_ATTEMPTS.labels("retry").inc()
            logger.info(
                "webhook attempt failed; will retry",
                extra={
                    **context,
                    "error": outcome.error,
                    "next_attempt_at": outcome.next_attempt_at,
                },
            )
        else:
            WEBHOOK_ATTEMPTS.labels("failed").inc()
            WEBHOOK_DELIVERIES.labels("failed").inc()
            logger.warning("webhook delivery failed", extra={**context, "error": outcome.error})

    async def _refresh_backlog(self) -> None:
        try:
            async with self.database.sessionmaker() as session:
                pending, oldest = await DeliveryRepository(session).backlog()
        except Exception as error:
            logger.debug("webhook backlog unavailable", extra={"error": repr(error)})
            return
        WEBHOOK_PENDING.set(pending)
        age = 0.0 if oldest is None else max((utcnow() - oldest).total_seconds(), 0.0)
        WEBHOOK_OLDEST_PENDING_SECONDS.set(age)
