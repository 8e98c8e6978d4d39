"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.deadline import BUDGET_HEADER, end_deadline, parse_budget, start_deadline
from shared.errors import PayloadTooLarge, ProblemError, problem_for, problem_response
from shared.logging import request_id_var
from shared.metrics import HTTP_IN_FLIGHT, HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from shared.tracing import (
    KEPT,
    NewUnkeptTrace,
    request_trace,
    server_span,
    traceparent_var,
    valid_traceparent,
)

if TYPE_CHECKING:
    from shared.spans import RequestSpan

access_logger = logging.getLogger("access")
logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT_HEADER = b"traceparent"
_BUDGET_HEADER = BUDGET_HEADER.encode()
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
UNMATCHED_ROUTE = "<unmatched>"


def incoming_request_id(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is sane, otherwise a new one."""
    return _sane_request_id(header_bytes(scope, REQUEST_ID_HEADER))


def incoming_traceparent(scope: Scope) -> str | None:
    """The caller's W3C `traceparent`, when it sent a valid one."""
    value = header_bytes(scope, TRACEPARENT_HEADER)
    return None if value is None else valid_traceparent(value.decode("latin-1"))


def _sane_request_id(value: bytes | None) -> str:
    if value is not None:
        candidate = value.decode("latin-1")
        if _SANE_REQUEST_ID.match(candidate):
            return candidate
    # Random like a UUID4's hex, at a fifth of the cost of building a `uuid.UUID`.
    return os.urandom(16).hex()


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestMetrics:
    """`http_requests_total` and `http_request_duration_seconds` by method, route and
    status, each labelled child looked up once: `labels()` takes a lock and checks its
    arguments on every call, a dictionary lookup does not."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status_code: int, seconds: float) -> None:
        key = (method, route, status_code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                HTTP_REQUESTS.labels(method, route, str(status_code)),
                HTTP_REQUEST_SECONDS.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


class RequestContextMiddleware:
    """Request id in and out, access log, metrics per route template, the problem
    document of a `ProblemError` raised by a middleware inside it, and a last-resort 500
    problem document (with the request id) for anything unhandled."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        quiet_paths: frozenset[str] = frozenset(),
        budget_seconds: float | None = None,
    ) -> None:
        self.app = app
        self.quiet_paths = quiet_paths
        self.budget_seconds = budget_seconds
        self.metrics = RequestMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, traceparent, budget = incoming_context(scope["headers"])
        quiet = scope["path"] in self.quiet_paths
        # Polled routes (health, metrics) make no spans: they would bury the real traces.
        served_under = traceparent if quiet else request_trace(traceparent)
        if served_under is KEPT:
            with server_span(scope["method"], scope["path"], traceparent) as span:
                await self._serve(
                    scope, receive, send, request_id, traceparent, budget, span, quiet
                )
        else:
            await self._serve(scope, receive, send, request_id, served_under, budget, None, quiet)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        traceparent: str | NewUnkeptTrace | None,
        budget: float | None,
        span: RequestSpan | None,
        quiet: bool,
    ) -> None:
        token = request_id_var.set(request_id)
        trace_token = traceparent_var.set(traceparent)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_code = 500
        response_started = False
        header_value = request_id.encode("latin-1")

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, header_value))
                message = {**message, "headers": headers}
            await send(message)

        HTTP_IN_FLIGHT.inc()
        deadline_token = start_deadline(self._budget(budget))
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as error:
            if isinstance(error, ProblemError) and not response_started:
                # Raised outside the routes' exception handlers (by a middleware such as
                # the gateway's proxy): the document those handlers would have made.
                await problem_for(error)(scope, receive, send_with_request_id)
                return
            logger.exception("unhandled error", extra={"path": scope.get("path")})
            if span is not None:
                span.record_exception(error)
            if not response_started:
                response = problem_response(500, detail="An unexpected error occurred.")
                await response(scope, receive, send_with_request_id)
        finally:
            end_deadline(deadline_token)
            HTTP_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            self.metrics.observe(method, route, status_code, elapsed)
            if span is not None:
                span.served(route, status_code)
            if not quiet and access_logger.isEnabledFor(logging.INFO):
                log_access(scope, method, route, status_code, elapsed)
            request_id_var.reset(token)
            traceparent_var.reset(trace_token)

    def _budget(self, asked: float | None) -> float | None:
        """This request's time budget: the caller's, never more than our own."""
        if asked is None:
            return self.budget_seconds
        return asked if self.budget_seconds is None else min(asked, self.budget_seconds)


def incoming_context(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[str, str | None, float | None]:
    """What the middleware reads from the request's headers, in one pass: the request id
    (the client's when sane, else a new one), the caller's `traceparent` (when valid)
    and the time budget it asked for (`X-Request-Budget-Ms`). The first of each counts."""
    request_id: bytes | None = None
    traceparent: bytes | None = None
    budget: bytes | None = None
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            request_id = value if request_id is None else request_id
        elif name == TRACEPARENT_HEADER:
            traceparent = value if traceparent is None else traceparent
        elif name == _BUDGET_HEADER:
            budget = value if budget is None else budget
    return (
        _sane_request_id(request_id),
        None if traceparent is None else valid_traceparent(traceparent.decode("latin-1")),
        parse_budget(budget),
    )


def log_access(scope: Scope, method: str, route: str, status_code: int, elapsed: float) -> None:
    """The access line of one request: the message says it all to a person, the fields
    to a machine."""
    path = scope["path"]
    access_logger.info(
        "%s %s %s",
        method,
        path,
        status_code,
        extra={
            "method": method,
            "path": path,
            "route": route,
            "status": status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "client": (scope.get("client") or ("", 0))[0],
        },
    )


#: How far past the limit a declared body may go and still be read (and discarded) after
#: the 413, rather than the connection being closed under the client.
DISCARD_MAX_BYTES = 1024 * 1024


class BodyTooLarge(PayloadTooLarge):
    title = "Request body too large"
    type_slug = "body-too-large"


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413 before they are read whole: at once from
    `Content-Length`, otherwise as soon as the streamed body goes past the limit.

    A body without a length is read (up to the limit) before the app runs, unless
    `stream_chunked` is set (a proxy that forwards bodies as they come): then the app's
    `receive` raises `PayloadTooLarge` once the body goes past the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, stream_chunked: bool = False) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.stream_chunked = stream_chunked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # A body of a length not far past the limit is let in and thrown away by the
            # server (it discards a body the app left unread), so the client reads the 413
            # instead of a reset connection; beyond that, the connection is closed.
            await self._refuse(
                scope, receive, send, close=declared > self.max_bytes + DISCARD_MAX_BYTES
            )
            return
        if self.stream_chunked:
            # h11 and httptools hold a body with a Content-Length to that length.
            if declared is None and header(scope, b"transfer-encoding") is not None:
                receive = self._counting(receive)
            await self.app(scope, receive, send)
            return
        if declared is not None or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        # A chunked body: read it (at most max_bytes) before the app sees it.
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    def _counting(self, receive: Receive) -> Receive:
        size = 0

        async def counting_receive() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge(
                        f"The request body is larger than {self.max_bytes} bytes.",
                        headers={"Connection": "close"},
                    )
            return message

        return counting_receive

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, close: bool = True
    ) -> None:
        response = problem_response(
            413,
            title="Request body too large",
            detail=f"The request body is larger than {self.max_bytes} bytes.",
            type_slug="body-too-large",
            headers={"Connection": "close"} if close else None,
        )
        await response(scope, receive, send)


def declared_content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def header(scope: Scope, name: bytes) -> str | None:
    value = header_bytes(scope, name)
    return None if value is None else value.decode("latin-1")


def header_bytes(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the header `name` (lower case), as sent."""
    for key, value in scope["headers"]:
        if key == name:
            found: bytes = value
            return found
    return None
