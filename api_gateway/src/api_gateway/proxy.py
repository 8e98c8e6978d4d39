"""The reverse proxy: a raw ASGI app behind `/api/...`.

Per request: rate limit, route, authenticate, then answer an anonymous read from the
response cache (`cache`) or forward through the process's one `ServiceClient`, streaming
the body up and the response down. It is plain ASGI in front of the router rather than
a FastAPI endpoint because it is the hot path: no route matching, no request object, no
dependency resolution, no response class, one pass over the headers each way. What it
decides (which service, which headers each way) is pure functions in `routing` and
`headers`; this module only does the I/O around them.

Each request is sent once (no retries: a POST may not be repeated, and the services
retry their own idempotent calls). A body without a length is counted as it streams
(`BodySizeLimitMiddleware`); going past the limit aborts the upstream request, which
has no answer yet, and the client gets a 413 problem. (Only a service answering before
it read the body, a 404 say, can be faster, with aiohttp: its answer is relayed then,
and nothing was acted upon.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import cast

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway.auth import authenticate
from api_gateway.cache import (
    CachedResponse,
    ResponseCache,
    asks_for_a_fresh_answer,
    shared_max_age,
)
from api_gateway.config import Settings
from api_gateway.errors import ClientClosedRequest
from api_gateway.headers import (
    ClientHeaders,
    Hop,
    RawHeaders,
    client_response_headers,
    read_client_headers,
    upstream_headers,
    upstream_url,
)
from api_gateway.ratelimit import ClientAddresses, RateLimiter, rate_limit_key
from api_gateway.routing import ProxyRoute, Target, resolve
from shared.auth import TokenVerifier
from shared.errors import BadRequest
from shared.http import ServiceClient, UpstreamTimeout, UpstreamUnavailable

logger = logging.getLogger(__name__)

#: A response longer than this (or of unknown length) is relayed while watching for the
#: client going away; a shorter one is over before that would matter.
_WATCH_DISCONNECT_ABOVE = 64 * 1024
#: Methods that change nothing: any other drops the path's cached answers.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class RequestBody:
    """The client's body as it arrives, for the upstream request."""

    __slots__ = ("finished", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientClosedRequest("The client went away before sending the whole body.")
            body: bytes = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                self.finished = True
                return


class ProxiedPaths:
    """ASGI middleware: `/api/...` goes to the proxy, anything else (health, the API
    document, the storefront) to the app.

    The proxy sits in front of the framework's router and exception handlers: nearly
    every request is a proxied one, and matching a route, entering its exception and
    dependency scopes cost a proxied read about a fifth of the gateway's time (py-spy,
    `bench/gateway.py`). What it raises is a `ProblemError`, which the request middleware
    around it turns into the same problem document."""

    def __init__(self, app: ASGIApp, *, proxy: Proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class Proxy:
    """Forwards `/api/v1/<resource>/...` to the service that owns the resource.

    Its collaborators are handed over once, by `start` in the app's lifespan, so a
    request reads them as attributes rather than looking them up on `app.state`."""

    http_client: ServiceClient
    stream_client: ServiceClient
    token_verifier: TokenVerifier
    rate_limiter: RateLimiter | None

    def __init__(self, settings: Settings) -> None:
        self.addresses = ClientAddresses(settings.trusted_proxies)
        self.max_authorization_bytes = settings.max_authorization_bytes
        self.cache = (
            ResponseCache(settings.response_cache_entries, settings.response_cache_max_body_bytes)
            if settings.response_cache_entries
            else None
        )
        timeout = httpx.Timeout(
            connect=settings.http_connect_timeout,
            read=settings.http_read_timeout,
            write=settings.http_read_timeout,
            pool=settings.http_pool_timeout,
        )
        # Set here, because a request not made by `AsyncClient.build_request` (which would
        # add the client's default headers) gets its timeouts only from its extensions.
        self.extensions = {"timeout": timeout.as_dict()}
        # Event streams: their keep-alive comes every 15 s at most, so a longer read
        # timeout cuts only a hung service, never a quiet stream.
        self.stream_extensions = {
            "timeout": {**timeout.as_dict(), "read": settings.stream_read_timeout_seconds}
        }

    def start(
        self,
        *,
        http_client: ServiceClient,
        stream_client: ServiceClient,
        token_verifier: TokenVerifier,
        rate_limiter: RateLimiter | None,
    ) -> None:
        """What the lifespan made: the ordinary calls' client, the streams' client, the
        token verifier and the rate limiter (None: no limit)."""
        self.http_client = http_client
        self.stream_client = stream_client
        self.token_verifier = token_verifier
        self.rate_limiter = rate_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope["client"][0] if scope.get("client") else ""
        peer_trusted = self.addresses.is_trusted(peer)
        client = read_client_headers(scope["headers"])

        address = self.addresses.client(peer, client.forwarded_for, peer_trusted)
        limiter = self.rate_limiter
        if limiter is not None:
            await limiter.check(rate_limit_key(address))

        method: str = scope["method"]
        target = resolve(method, scope.get("raw_path") or scope["path"].encode(), scope["path"])
        scope["route"] = target.route  # metrics and access logs per resource
        if not target.public:
            await authenticate(
                client.authorization, self.token_verifier, max_bytes=self.max_authorization_bytes
            )

        cache = self.cache
        # The cache generation a cacheable read started at (None: not cacheable).
        generation: int | None = None
        # Set when this read forwards for an expired answer that others wait for.
        refresh: asyncio.Future[None] | None = None
        if cache is not None:
            if (
                method == "GET"
                and target.public
                and client.authorization is None
                and not client.has_body
            ):
                query = scope["query_string"]
                if not asks_for_a_fresh_answer(client.cache_control):
                    cached = cache.get(target.path, query)
                    if cached is None and (
                        under_way := cache.refresh_under_way(target.path, query)
                    ):
                        # Another request is forwarding this read: its answer, once kept.
                        await asyncio.shield(under_way)
                        cached = cache.get(target.path, query, count=False)
                    if cached is not None:
                        await _send_cached(cached, cache.clock(), send)
                        return
                generation = cache.generation
                refresh = cache.start_refresh(target.path, query)
            elif method not in _SAFE_METHODS:
                # Before the write, and again once it is answered (in `_forward`): a
                # read that raced it cannot leave the old answer behind.
                cache.invalidate(target.path)
        try:
            await self._forward(
                scope, receive, send, target, client, address, peer_trusted, generation
            )
        finally:
            if cache is not None and refresh is not None:
                cache.end_refresh(target.path, scope["query_string"], refresh)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        client: ClientHeaders,
        address: str,
        peer_trusted: bool,
        generation: int | None,
    ) -> None:
        """Forward the request to its service and relay the answer (kept in the cache
        when `generation` says the read may be, and the service says it may be shared)."""
        method: str = scope["method"]
        cache = self.cache
        hop = Hop(address, peer_trusted, scope["scheme"], scope["state"]["request_id"])
        # Streams stay open for minutes: a pool of their own, never the ordinary calls'.
        http = self.stream_client if target.stream else self.http_client
        upstream = target.route.upstream
        base = http.upstreams[upstream]
        body = RequestBody(receive) if client.has_body else None
        request = httpx.Request(
            method,
            _parse_url(upstream_url(base, target.path, scope["query_string"])),
            headers=upstream_headers(client, hop),
            content=body,
            extensions=self.stream_extensions if target.stream else self.extensions,
        )
        try:
            response = await http.send(upstream, request)
        finally:
            if cache is not None and method not in _SAFE_METHODS:
                cache.invalidate(target.path)
        try:
            if generation is not None and response.status_code == 200:
                await self._relay_to_cache(response, target, scope, receive, send, generation)
            else:
                await _relay(response, target.route, base, receive, send, body)
        except BaseException:
            with anyio.CancelScope(shield=True):  # closed even when the task is cancelled
                await response.aclose()
            raise
        await response.aclose()

    async def _relay_to_cache(
        self,
        response: httpx.Response,
        target: Target,
        scope: Scope,
        receive: Receive,
        send: Send,
        generation: int,
    ) -> None:
        """Relay an anonymous read's 200, and keep it when the service says it may be
        shared; `generation` is the cache's when the read began (a write since then means
        the answer may predate it, so it is relayed but not kept)."""
        cache = cast(ResponseCache, self.cache)
        route = target.route
        base = self.http_client.upstreams[route.upstream]
        headers, length = client_response_headers(response.headers.raw, base.encode("latin-1"))
        max_age = shared_max_age(headers)
        if not max_age or length is None or length > cache.max_body_bytes:
            await _relay_response(response, headers, length, route, receive, send, None)
            return
        # Short and of known length: read whole, then sent in one message.
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
        try:
            with _upstream_errors(route):
                content = b"".join([chunk async for chunk in chunks])
        finally:
            await chunks.aclose()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})
        if len(content) == length and cache.generation == generation:
            cache.put(target.path, scope["query_string"], 200, headers, content, max_age)


async def _send_cached(cached: CachedResponse, now: float, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": cached.status,
            "headers": cached.headers_at(now),
        }
    )
    await send({"type": "http.response.body", "body": cached.body, "more_body": False})


async def _relay(
    response: httpx.Response,
    route: ProxyRoute,
    base: str,
    receive: Receive,
    send: Send,
    body: RequestBody | None,
) -> None:
    """Send the service's answer to the client, streaming its body."""
    headers, length = client_response_headers(response.headers.raw, base.encode("latin-1"))
    await _relay_response(response, headers, length, route, receive, send, body)


async def _relay_response(
    response: httpx.Response,
    headers: RawHeaders,
    length: int | None,
    route: ProxyRoute,
    receive: Receive,
    send: Send,
    body: RequestBody | None,
) -> None:
    """`_relay` with the client's headers and the body's length worked out."""
    chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    try:
        first = await _first_chunk(chunks, route)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        if _watches_disconnect(length, body):
            # An event must not wait for the next one: a stream goes out chunk by chunk.
            immediate = _is_event_stream(response)
            await _relay_until_disconnect(first, chunks, route, receive, send, immediate)
        else:
            await _relay_rest(first, chunks, route, send)
    finally:
        await chunks.aclose()


async def _first_chunk(chunks: AsyncIterator[bytes], route: ProxyRoute) -> bytes:
    """The body's first chunk, read before the status goes out, so that a service
    failing before its body still becomes a 503/504 problem document."""
    with _upstream_errors(route):
        return await anext(chunks, b"")


@contextmanager
def _upstream_errors(route: ProxyRoute) -> Iterator[None]:
    """The service failing while its answer is read, as the client's 504 or 503."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise UpstreamTimeout(f"{route.upstream} did not answer in time.") from error
    except httpx.TransportError as error:
        raise UpstreamUnavailable(f"{route.upstream} broke off its answer.") from error


def _watches_disconnect(length: int | None, body: RequestBody | None) -> bool:
    """Whether to relay while watching for the client going away: for a long or endless
    answer, once the request body is in (until then `receive` is the body's)."""
    long = length is None or length > _WATCH_DISCONNECT_ABOVE
    return long and (body is None or body.finished)


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


async def _relay_rest(
    pending: bytes,
    chunks: AsyncIterator[bytes],
    route: ProxyRoute,
    send: Send,
    immediate: bool = False,
) -> None:
    """Send the rest of the body, each chunk once the next is known (the last one goes
    out with `more_body: False`: one ASGI message fewer per response); `immediate`
    sends each chunk as it comes."""
    try:
        if immediate:
            await send({"type": "http.response.body", "body": pending, "more_body": True})
            pending = b""
        async for chunk in chunks:
            if chunk and immediate:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            elif chunk:
                await send({"type": "http.response.body", "body": pending, "more_body": True})
                pending = chunk
    except httpx.HTTPError:
        # Too late for a problem document: leave the response unfinished, so the server
        # drops the connection and the client sees a truncated answer, not a short one.
        logger.warning("upstream broke off a response", extra={"upstream": route.upstream})
        return
    await send({"type": "http.response.body", "body": pending, "more_body": False})


async def _relay_until_disconnect(
    pending: bytes,
    chunks: AsyncIterator[bytes],
    route: ProxyRoute,
    receive: Receive,
    send: Send,
    immediate: bool = False,
) -> None:
    """`_relay_rest`, stopped as soon as the client goes away (the server does not say
    so on `send`), so that a long or endless upstream stream is not read for nobody."""
    async with anyio.create_task_group() as group:

        async def relay() -> None:
            await _relay_rest(pending, chunks, route, send, immediate)
            group.cancel_scope.cancel()

        group.start_soon(relay)
        await _wait_for_disconnect(receive)
        group.cancel_scope.cancel()


async def _wait_for_disconnect(receive: Receive) -> None:
    message: Message = {"type": ""}
    while message["type"] != "http.disconnect":
        message = await receive()


@lru_cache(maxsize=4096)
def _parse_url(url: str) -> httpx.URL:
    """`httpx.URL(url)`, remembered: parsing is a large share of a proxied request's cost,
    and the same URLs (a popular product) come again and again. URLs are immutable."""
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as error:
        raise BadRequest("The request target is not a valid URL.") from error
