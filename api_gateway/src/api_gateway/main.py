"""The gateway app: `uvicorn --factory api_gateway.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from api_gateway import docs, storefront
from api_gateway.config import Settings
from api_gateway.health import HealthChecker
from api_gateway.health import router as health_router
from api_gateway.openapi import ApiDocument, Document
from api_gateway.proxy import ProxiedPaths, Proxy
from api_gateway.ratelimit import RateLimiter
from shared.auth import TokenVerifier
from shared.http import ServiceClient
from shared.service import ServiceBuilder

#: What a page on an allowed origin may send and read (CORS).
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID")
CORS_RESPONSE_HEADERS = ("X-Request-ID", "Retry-After", "Idempotent-Replayed", "Location")


def create_app(
    settings: Settings | None = None, *, token_verifier: TokenVerifier | None = None
) -> FastAPI:
    """Build the gateway: service defaults, `GET /health`, the proxy behind `/api/`, the
    merged API document with its `/docs`, and the storefront at `/`.

    `token_verifier` replaces the one that asks the user service (tests sign their own)."""
    settings = settings or Settings()
    proxy = Proxy(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        http_client: ServiceClient = app.state.http_client
        limiter = RateLimiter.from_settings(settings)
        app.state.rate_limiter = limiter
        app.state.health_checker = HealthChecker(http_client, settings)
        app.state.api_document = ApiDocument(
            http_client,
            lambda: _own_document(app),
            title="E-commerce API",
            version=app.version,
            timeout=settings.health_timeout_seconds,
            refresh_seconds=settings.openapi_refresh_seconds,
            retry_seconds=settings.openapi_retry_seconds,
        )
        # Streams stay open for minutes: their own pool, never the ordinary calls'.
        stream_client = ServiceClient.from_settings(
            settings,
            http_client.upstreams,
            max_connections=settings.stream_max_connections,
            read_timeout=settings.stream_read_timeout_seconds,
            budget_reads=False,
        )
        app.state.stream_client = stream_client
        proxy.start(
            http_client=http_client,
            stream_client=stream_client,
            token_verifier=app.state.token_verifier,
            rate_limiter=limiter,
        )
        try:
            yield
        finally:
            await stream_client.aclose()
            if limiter is not None:
                await limiter.aclose()

    service = ServiceBuilder(
        settings,
        title="E-commerce API gateway",
        description=(
            "The single entry point: `/api/v1/<resource>/...` goes to the service that owns "
            "the resource; `/openapi.json` and `/docs` document every route."
        ),
        stream_request_bodies=True,
    )
    service.add_service_defaults()
    # The user service is the client's default upstream already.
    service.add_http_client(
        upstreams={
            "product": settings.product_service_url,
            "order": settings.order_service_url,
            "inventory": settings.inventory_service_url,
            "notification": settings.notification_service_url,
        }
    )
    service.add_auth(None if token_verifier is None else lambda app: token_verifier)
    service.add_lifespan(lifespan)
    if settings.cors_allow_origins:
        # Outside the proxy: a preflight is answered here, before any token is asked for.
        service.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_RESPONSE_HEADERS,
            max_age=600,
        )
    service.add_middleware(ProxiedPaths, proxy=proxy)
    service.add_routers(health_router)
    app = service.build()
    # `/api` -> 307 `/api/` would only lead to a 404; the services redirect their own routes.
    app.router.redirect_slashes = False
    # The merged document and its page replace FastAPI's own, which would show only the
    # gateway's few routes (and load Swagger UI from a CDN).
    app.router.routes[:] = [route for route in app.router.routes if not _fastapi_docs(route)]
    app.include_router(docs.router)
    app.include_router(storefront.router)
    app.router.routes.extend([docs.assets(), storefront.assets()])
    return app


def _fastapi_docs(route: BaseRoute) -> bool:
    return getattr(route, "path", None) in {"/openapi.json", "/docs", "/docs/oauth2-redirect"}


def _own_document(app: FastAPI) -> Document:
    """The gateway's own routes (`/health`) in OpenAPI form, to merge with the services'."""
    return get_openapi(title=app.title, version=app.version, routes=app.routes)
