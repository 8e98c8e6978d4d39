"""`GET /v1/products/{id}` answered from the document cache before the framework routes it.

The hottest route of a shop is an anonymous read of one product, and once its document
is cached (`cache.py`) the answer is those bytes: FastAPI's routing and dependency
resolution around them were two thirds of the route's CPU (py-spy, bench/gateway.py).
This ASGI middleware answers that one case and hands everything else to the app
untouched: a token (an administrator may see more, and a bad token is still a 401), an
id that is not a UUID (the route's 422), a cache miss, any other route or method. It
runs inside the request middleware, so its answers carry the request id, the access
line, the metrics (under the route's own template) and the span like any other.
"""

from __future__ import annotations

import time
import uuid

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from product_service.cache import CachedDocument, ProductCache

PREFIX = "/v1/products/"
#: A UUID in its canonical form, the only one taken here (the route validates the rest).
_UUID_LENGTH = 36
_AUTHORIZATION = b"authorization"
_JSON = (b"content-type", b"application/json")


def anonymous_product_read(scope: Scope) -> uuid.UUID | None:
    """The product id of a request this path may answer: an anonymous `GET` of
    `/v1/products/{id}` with the id in canonical form; None for any other request."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(PREFIX):
        return None
    candidate = path[len(PREFIX) :]
    if len(candidate) != _UUID_LENGTH:
        return None
    for name, _ in scope["headers"]:
        if name == _AUTHORIZATION:
            return None
    try:
        return uuid.UUID(candidate)
    except ValueError:
        return None


def document_headers(cached: CachedDocument) -> list[tuple[bytes, bytes]]:
    """The headers the route's own answer has, in its order."""
    return [
        (b"cache-control", cached.cache_control(time.monotonic()).encode("latin-1")),
        (b"content-length", str(len(cached.document)).encode("latin-1")),
        _JSON,
    ]


class CachedProductReads:
    """Answers an anonymous read of a cached product with its document; `route` is the
    route it stands in for (metrics and spans are named after it)."""

    def __init__(self, app: ASGIApp, *, cache: ProductCache, route: BaseRoute) -> None:
        self.app = app
        self.cache = cache
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (product_id := anonymous_product_read(scope)):
            # A miss is not counted here: the route that serves the request counts it.
            cached = self.cache.get(product_id, count_miss=False)
            if cached is not None:
                scope["route"] = self.route
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": document_headers(cached),
                    }
                )
                await send({"type": "http.response.body", "body": cached.document})
                return
        await self.app(scope, receive, send)
