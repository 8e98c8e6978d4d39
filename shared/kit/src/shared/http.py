"""The one HTTP client a process uses to call other services.

Explicit timeouts and pool limits, each call bounded by what is left of the request's
time budget (`shared.deadline`, passed on to the callee), retries only for idempotent
requests while time remains, and a circuit breaker per upstream with half-open recovery.
A breaker counts only the failures of the service it guards: a 503/504 that service
answers because one of *its* dependencies failed (`X-Dependency-Failure`) is not one.
Failures come out as problem errors (503, or 504 on a timeout), so a route that calls
another service needs no error handling of its own. The breaker is written here rather
than taken from a library because the async ones on PyPI are unmaintained and none
shares state with a streaming proxy's calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from enum import IntEnum
from http.cookiejar import Cookie, CookieJar
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared import deadline
from shared.errors import GatewayTimeout, ServiceUnavailable
from shared.metrics import CIRCUIT_STATE, UPSTREAM_REQUEST_SECONDS, UPSTREAM_REQUESTS
from shared.service_auth import INTERNAL_PREFIX, ServiceIdentity, upstream_service
from shared.tracing import client_span, record_response

logger = logging.getLogger(__name__)

#: How long an idle pooled connection is kept for the next call: less than uvicorn's own
#: keep-alive timeout (5 s), as nginx's upstream pool is, so a call never goes out on a
#: connection the service is closing at that moment (a POST that would then fail, not be
#: retried). A connection the service already closed would be replaced anyway.
IDLE_CONNECTION_SECONDS = 4.0

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({502, 503})
#: Statuses that say the upstream itself is unwell (as opposed to the request being wrong).
FAILURE_STATUSES = frozenset({502, 503, 504})

#: On a 503/504 a service answers because a service *it* calls failed (set by the errors
#: below): its callers' breakers leave it closed, since the service itself is fine.
DEPENDENCY_FAILURE_HEADER = "X-Dependency-Failure"

TransportName = Literal["httpx", "aiohttp"]


class CircuitState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class UpstreamUnavailable(ServiceUnavailable):
    title = "Upstream service unavailable"
    type_slug = "upstream-unavailable"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), DEPENDENCY_FAILURE_HEADER: "1"}
        super().__init__(detail, **kwargs)


class CircuitOpen(UpstreamUnavailable):
    title = "Upstream circuit open"
    type_slug = "circuit-open"


def unusable_answer(upstream: str, response: httpx.Response, what: str) -> UpstreamUnavailable:
    """The 503 for an answer a caller cannot use (an unexpected status, a body that does
    not parse): the dependency is not doing its job, and the client may retry later."""
    headers = {}
    if retry_after := response.headers.get("retry-after"):
        headers["Retry-After"] = retry_after
    logger.warning(
        "unexpected upstream answer",
        extra={"upstream": upstream, "status": response.status_code, "call": what},
    )
    return UpstreamUnavailable(
        f"The {upstream} service answered {response.status_code} to {what}.", headers=headers
    )


def problem_type(response: httpx.Response) -> str:
    """The `type` of a problem document answer ("" when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


class UpstreamTimeout(GatewayTimeout):
    title = "Upstream service timed out"
    type_slug = "upstream-timeout"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), DEPENDENCY_FAILURE_HEADER: "1"}
        super().__init__(detail, **kwargs)


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `reset_seconds` lets
    one probe through (half-open), which closes it on success or opens it again.

    A failed call that began before the upstream last answered another call well does
    not count: the upstream was working meanwhile. Requests in flight together on one of
    its processes when that process died fail together, while its other processes keep
    answering; counted, they would shut the caller out of the whole service."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._succeeded_at: float | None = None
        self._probe_in_flight = False
        self._publish()

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self.reset_seconds:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def retry_after(self) -> int:
        if self._opened_at is None:
            return 0
        remaining = self.reset_seconds - (self._clock() - self._opened_at)
        return max(1, math.ceil(remaining))

    def acquire(self) -> float:
        """Raise `CircuitOpen` unless a call may go through now; returns the moment the
        call starts (for `record_failure`)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return self._clock()
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            self._publish()
            return self._clock()
        raise CircuitOpen(
            f"{self.name} is failing; calls are paused for a moment.",
            headers={"Retry-After": str(self.retry_after())},
        )

    def record_success(self) -> None:
        self._failures = 0
        self._succeeded_at = self._clock()
        self._opened_at = None
        self._probe_in_flight = False
        self._publish()

    def record_failure(self, started_at: float | None = None) -> None:
        """Count the failure of a call that started at `started_at` (see the class)."""
        if (
            started_at is not None
            and not self._probe_in_flight
            and self._succeeded_at is not None
            and started_at <= self._succeeded_at
        ):
            return
        self._failures += 1
        if self._probe_in_flight or self._failures >= self.failure_threshold:
            if self._opened_at is None or self._probe_in_flight:
                logger.warning("circuit opened", extra={"upstream": self.name})
            self._opened_at = self._clock()
        self._probe_in_flight = False
        self._publish()

    def release(self) -> None:
        """Forget a probe whose outcome says nothing about the upstream's health."""
        self._probe_in_flight = False

    def _publish(self) -> None:
        CIRCUIT_STATE.labels(self.name).set(int(self.state))


def build_transport(name: TransportName, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if name == "aiohttp":
        import aiohttp
        from httpx_aiohttp import AiohttpTransport

        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=limits.max_connections or 0,
                    keepalive_timeout=limits.keepalive_expiry or IDLE_CONNECTION_SECONDS,
                    # The system's resolver (hosts file, search domains: how a cluster
                    # names its services), not c-ares, which aiohttp would take
                    # wherever aiodns is installed.
                    resolver=aiohttp.ThreadedResolver(),
                ),
                # Like the httpx client below: no cookies kept from one call for the next.
                cookie_jar=aiohttp.DummyCookieJar(),
                # aiohttp adds Accept, Accept-Encoding, User-Agent and Content-Type to a
                # request without them; a relay must send what it was given, nothing more.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )

        return AiohttpTransport(limits=limits, client=session)
    return httpx.AsyncHTTPTransport(limits=limits)


class ServiceClient:
    """One per process, made in the lifespan; `upstreams` maps a name to its base URL."""

    def __init__(
        self,
        upstreams: dict[str, str],
        *,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        pool_timeout: float = 1.0,
        max_connections: int = 200,
        max_keepalive: int = 100,
        retries: int = 2,
        failure_threshold: int = 5,
        reset_seconds: float = 10.0,
        transport: TransportName = "aiohttp",
        custom_transport: httpx.AsyncBaseTransport | None = None,
        identity: ServiceIdentity | None = None,
        budget_reads: bool = True,
    ) -> None:
        #: Signs the credential `request` sends to `/internal` routes (never `send`: the
        #: gateway's proxy relays clients' requests through it, unsigned).
        self.identity = identity
        self.upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self.retries = retries
        #: Whether each read of an answer ends by the request's deadline too; False for
        #: the gateway's event streams, which outlive any budget by design (their reads
        #: keep their own timeout, longer than the streams' keep-alive).
        self.budget_reads = budget_reads
        self.timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=pool_timeout
        )
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=IDLE_CONNECTION_SECONDS,
        )
        self.transport = custom_transport or build_transport(transport, limits)
        self.http = httpx.AsyncClient(
            timeout=self.timeout,
            transport=self.transport,
            follow_redirects=False,
            # A client shared by every request must not keep one response's cookies and
            # send them with the next (the gateway relays every user's responses).
            cookies=_NoCookieJar(),
        )
        self.breakers = {
            name: CircuitBreaker(
                name, failure_threshold=failure_threshold, reset_seconds=reset_seconds
            )
            for name in self.upstreams
        }

    @classmethod
    def from_settings(
        cls, settings: Any, upstreams: dict[str, str], **overrides: Any
    ) -> ServiceClient:
        options: dict[str, Any] = {
            "connect_timeout": settings.http_connect_timeout,
            "read_timeout": settings.http_read_timeout,
            "pool_timeout": settings.http_pool_timeout,
            "max_connections": settings.http_max_connections,
            "max_keepalive": settings.http_max_keepalive,
            "retries": settings.http_retries,
            "failure_threshold": settings.breaker_failure_threshold,
            "reset_seconds": settings.breaker_reset_seconds,
            "transport": getattr(settings, "http_transport", "aiohttp"),
        }
        options.update(overrides)
        return cls(upstreams, **options)

    def url(self, upstream: str, path: str) -> str:
        return f"{self.upstreams[upstream]}{path}"

    async def request(
        self,
        upstream: str,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Call `upstream` and read the whole answer; retry only what may be repeated."""
        method = method.upper()
        may_retry = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempts = 1 + (self.retries if may_retry else 0)
        for attempt in range(1, attempts + 1):
            if self.identity is not None and path.startswith(INTERNAL_PREFIX):
                # Each try signs anew: a retry after a backoff never sends a stale token.
                credential = self.identity.authorization(upstream_service(upstream))
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": credential}
            request = self.http.build_request(method, self.url(upstream, path), **kwargs)
            pause = _backoff(attempt)
            last = attempt == attempts or not _time_for(pause)
            try:
                response = await self.send(upstream, request)
                await response.aread()
            except UpstreamUnavailable as error:
                if last or isinstance(error, CircuitOpen):
                    raise
            else:
                if response.status_code not in RETRYABLE_STATUSES or last:
                    return response
                await response.aclose()
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, upstream: str, request: httpx.Request) -> httpx.Response:
        """Send one request once, streaming the response; the caller must close it.

        Connection failures become `UpstreamUnavailable` (503), timeouts
        `UpstreamTimeout` (504), and both count against the upstream's breaker. An error
        raised by the request's own streamed body (the caller's client went away, or sent
        too much) comes out as itself and says nothing about the upstream.
        """
        breaker = self.breakers[upstream]
        _bound_by_deadline(upstream, request, reads=self.budget_reads)
        body = None
        stream = request.stream
        if isinstance(stream, httpx.AsyncByteStream) and not isinstance(stream, httpx.ByteStream):
            body = request.stream = _WatchedBody(stream)
        try:
            started_at = breaker.acquire()
        except CircuitOpen:
            UPSTREAM_REQUESTS.labels(upstream, "circuit_open").inc()
            raise
        with client_span(upstream, request.method, request.url, request.headers) as span:
            response = await self._send(upstream, request, breaker, started_at, body)
            record_response(span, response.status_code)
        return response

    async def _send(
        self,
        upstream: str,
        request: httpx.Request,
        breaker: CircuitBreaker,
        started_at: float,
        body: _WatchedBody | None,
    ) -> httpx.Response:
        started = time.perf_counter()
        try:
            # Bounded by the transport's own timeouts (clipped to the deadline above), not
            # by cancelling the send from outside: a cancelled send could leave a
            # half-closed connection in the pool for the next call.
            response = await self._exchange(request)
        except httpx.TransportError as error:
            # Some transports (aiohttp) wrap the body's own error in a connection error.
            if body is not None and body.error is not None:
                breaker.release()
                raise body.error from None
            _record_transport_error(breaker, error, started_at)
            if not isinstance(error, httpx.TimeoutException):
                UPSTREAM_REQUESTS.labels(upstream, "error").inc()
                raise UpstreamUnavailable(f"{upstream} is unavailable.") from error
            UPSTREAM_REQUESTS.labels(upstream, "timeout").inc()
            if isinstance(error, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise UpstreamUnavailable(f"{upstream} could not be reached in time.") from error
            raise UpstreamTimeout(f"{upstream} did not answer in time.") from error
        except BaseException:
            breaker.release()
            raise
        UPSTREAM_REQUEST_SECONDS.labels(upstream).observe(time.perf_counter() - started)
        UPSTREAM_REQUESTS.labels(upstream, str(response.status_code)).inc()
        if (
            response.status_code in FAILURE_STATUSES
            and DEPENDENCY_FAILURE_HEADER not in response.headers
        ):
            breaker.record_failure(started_at)
        else:
            breaker.record_success()
        return response

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """`AsyncClient.send(request, stream=True)` without what a call between services
        never uses (auth flows, redirects, cookies, event hooks, the elapsed-time wrapper):
        measured, that machinery cost more CPU than the aiohttp exchange under it (about
        110 of 250 us per call). The transport's own API, so either transport fits."""
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.http.aclose()  # closes the transport too


class _NoCookieJar(CookieJar):
    """Keeps nothing (cheaper than a policy that refuses each cookie after parsing it)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return

    def set_cookie(self, cookie: Cookie) -> None:
        return


class _WatchedBody(httpx.AsyncByteStream):
    """A streamed request body that remembers the error its source raised, if any."""

    def __init__(self, source: httpx.AsyncByteStream) -> None:
        self.source = source
        self.error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.source:
                yield chunk
        except Exception as error:
            self.error = error
            raise

    async def aclose(self) -> None:
        await self.source.aclose()


def _record_transport_error(
    breaker: CircuitBreaker, error: httpx.TransportError, started_at: float
) -> None:
    if isinstance(error, httpx.PoolTimeout):
        # Our own connection pool was full: our congestion, not the upstream's failure.
        breaker.release()
    else:
        breaker.record_failure(started_at)


def _bound_by_deadline(upstream: str, request: httpx.Request, *, reads: bool) -> None:
    """Tell the callee what is left of the request's budget (minus a margin to turn its
    failure into our answer) and wait for it no longer than that: every timeout of the
    call (pool, connect, write and, with `reads`, each read) is clipped to what is left.
    504 at once when nothing is left."""
    left = deadline.remaining()
    if left is None:
        return
    if left < deadline.MIN_CALL_SECONDS:
        UPSTREAM_REQUESTS.labels(upstream, "no_budget").inc()
        raise UpstreamTimeout(f"No time was left to call {upstream}.")
    margin = min(deadline.ANSWER_MARGIN_SECONDS, left / 2)
    request.headers[deadline.BUDGET_HEADER] = str(max(1, int((left - margin) * 1000)))
    timeouts = dict(request.extensions.get("timeout") or {})
    for phase in ("connect", "write", "pool", *(("read",) if reads else ())):
        configured = timeouts.get(phase)
        timeouts[phase] = left if configured is None else min(configured, left)
    request.extensions["timeout"] = timeouts


def _time_for(pause: float) -> bool:
    """Whether a retry after `pause` would still have time to be made."""
    left = deadline.remaining()
    return left is None or left - pause >= deadline.MIN_CALL_SECONDS


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: 0..50 ms, 0..100 ms, ..."""
    return random.uniform(0, 0.05 * 2 ** (attempt - 1))  # noqa: S311 - jitter, not crypto


BatchT = TypeVar("BatchT", bound=BaseModel)


async def get_batch(
    client: ServiceClient,
    upstream: str,
    path: str,
    ids: Iterable[uuid.UUID],
    model: type[BatchT],
    what: str,
) -> BatchT:
    """GET `path?ids=...` for many records in one call, parsed as `model`; an answer
    that is not a 200 or does not parse is `unusable_answer`."""
    unique = [str(record_id) for record_id in dict.fromkeys(ids)]
    response = await client.request(upstream, "GET", path, params={"ids": unique})
    if response.status_code != 200:
        raise unusable_answer(upstream, response, what)
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        raise unusable_answer(upstream, response, what) from error
