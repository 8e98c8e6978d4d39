"""The reverse proxy: a raw ASGI app behind `/api/...`.

Per request: rate limit, route, authenticate, then forward through the process's one
`ServiceClient`, streaming the body up and the response down. It is plain ASGI rather
than a FastAPI endpoint because it is the hot path: no request object, no dependency
resolution, no response class, one pass over the headers each way. What it decides
(which service, which headers each way) is pure functions in `routing` and `headers`;
this module only does the I/O around them.

Each request is sent once (no retries: a POST may not be repeated, and the services
retry their own idempotent calls). A body without a length is counted as it streams
(`BodySizeLimitMiddleware`); going past the limit aborts the upstream request, which
has no answer yet, and the client gets a 413 problem. (Only a service answering before
it read the body, a 404 say, can be faster, with aiohttp: its answer is relayed then,
and nothing was acted upon.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from functools import lru_cache
from typing import cast

import anyio
import httpx
from starlette.types import Message, Receive, Scope, Send

from api_gateway.auth import authenticate
from api_gateway.config import Settings
from api_gateway.errors import ClientClosedRequest
from api_gateway.headers import (
    Hop,
    client_response_headers,
    read_client_headers,
    upstream_headers,
    upstream_url,
)
from api_gateway.ratelimit import ClientAddresses, RateLimiter, rate_limit_key
from api_gateway.routing import ProxyRoute, resolve
from shared.auth import TokenVerifier
from shared.errors import BadRequest
from shared.http import ServiceClient, UpstreamTimeout, UpstreamUnavailable

logger = logging.getLogger(__name__)

#: A response longer than this (or of unknown length) is relayed while watching for the
#: client going away; a shorter one is over before that would matter.
_WATCH_DISCONNECT_ABOVE = 64 * 1024


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
        response = await http.send(upstream, request)
        try:
            await _relay(response, target.route, base, receive, send, body)
        except BaseException:
            with anyio.CancelScope(shield=True):  # closed even when the task is cancelled
                await response.aclose()
            raise
        await response.aclose()


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
    try:
        return await anext(chunks, b"")
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
