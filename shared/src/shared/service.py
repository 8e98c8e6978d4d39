"""Service defaults: one call wires logging, tracing, errors, request ids, body limits,
the database, the HTTP client, token verification, events, health and metrics into an
app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import RemoteJWKS, RemoteUserStatus, TokenVerifier
from shared.config import ServiceSettings
from shared.db import Database
from shared.errors import ServiceUnavailable, install_error_handlers
from shared.events import EventHandlers, ServiceEvents
from shared.http import ServiceClient
from shared.logging import configure_logging
from shared.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from shared.tracing import configure_tracing, trace_engine

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
ReadyCheck = Callable[[FastAPI], Any]

HEALTH_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
READINESS_TIMEOUT_SECONDS = 2.0


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    upstreams: dict[str, str] | None = None,
    lifespan: Lifespan | None = None,
    use_database: bool = True,
    stream_request_bodies: bool = False,
    version: str = "1.0.0",
    publishes_events: bool = False,
    event_handlers: EventHandlers | None = None,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
) -> FastAPI:
    """Build a service's FastAPI app with everything every service has.

    Made in the lifespan and put on `app.state`: `settings`, `database` (unless
    `use_database` is false), `http_client` (a `ServiceClient` for the user service and
    `upstreams`) and `token_verifier`. `lifespan` runs inside, after all of those exist.
    `stream_request_bodies` hands a body without a length to the app as it arrives
    instead of reading it first (see `BodySizeLimitMiddleware`).

    Events (`shared.events`, needs the database): `publishes_events` runs the outbox
    relay, `event_handlers` the consumer of this service's queue; either connects to
    RabbitMQ in the background (`app.state.events`). The broker is reported by
    /health/ready without failing it: the outbox keeps a producer correct while the
    broker is away, so the HTTP API stays up.

    `ready_checks` are more checks /health/ready runs (each gets the app and raises when
    its dependency is not ready); the database is always checked.
    """
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings)
    all_upstreams = {"user": settings.user_service_url, **(upstreams or {})}

    @asynccontextmanager
    async def service_lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = (
            Database(
                settings.effective_database_url(),
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                echo=settings.database_echo,
            )
            if use_database
            else None
        )
        if database is not None:
            trace_engine(database.engine)
        client = ServiceClient.from_settings(settings, all_upstreams)
        events = (
            ServiceEvents(settings, database, publishes=publishes_events, handlers=event_handlers)
            if database is not None and (publishes_events or event_handlers is not None)
            else None
        )
        app.state.database = database
        app.state.http_client = client
        app.state.events = events
        app.state.token_verifier = TokenVerifier(
            RemoteJWKS(client, cache_seconds=settings.jwks_cache_seconds),
            RemoteUserStatus(client, cache_seconds=settings.user_status_cache_seconds),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        try:
            if events is not None:
                await events.start()
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            if events is not None:
                await events.stop()
            await client.aclose()
            if database is not None:
                await database.dispose()

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=service_lifespan,
        docs_url="/docs",
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans and metrics, on as soon as a tracer provider
        # exists, are off: the request middleware makes the one span per request
        # (named like the metrics' routes), and Prometheus has the metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        stream_chunked=stream_request_bodies,
    )
    app.add_middleware(RequestContextMiddleware, quiet_paths=HEALTH_PATHS)
    checks: dict[str, ReadyCheck] = {"database": _ping_database} if use_database else {}
    checks.update(ready_checks or {})
    uses_events = use_database and (publishes_events or event_handlers is not None)
    app.include_router(
        health_router(
            ready_checks=checks, degraded_checks={"broker": _check_broker} if uses_events else {}
        )
    )
    for router in routers:
        app.include_router(router)
    return app


async def _ping_database(app: FastAPI) -> None:
    await app.state.database.ping()


async def _check_broker(app: FastAPI) -> None:
    await app.state.events.check_broker()


def health_router(
    ready_checks: Mapping[str, ReadyCheck], degraded_checks: Mapping[str, ReadyCheck] | None = None
) -> APIRouter:
    """`/health/ready` is 503 when one of `ready_checks` fails; one of `degraded_checks`
    failing is reported (`status: "degraded"`) with a 200."""
    optional_checks = degraded_checks or {}
    router = APIRouter(include_in_schema=False)

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        """The process is up and serving."""
        return {"status": "ok"}

    @router.get("/health/ready")
    async def ready(request: Request) -> dict[str, Any]:
        """The process can do its work: its dependencies answer."""
        checks: dict[str, str] = {}
        for name, check in {**ready_checks, **optional_checks}.items():
            try:
                async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                    await check(request.app)
            except Exception:
                checks[name] = "unavailable"
            else:
                checks[name] = "ok"
        failed = [name for name in ready_checks if checks[name] != "ok"]
        if failed:
            raise ServiceUnavailable(
                "A dependency is not ready: " + ", ".join(failed), extra={"checks": checks}
            )
        healthy = all(state == "ok" for state in checks.values())
        return {"status": "ok" if healthy else "degraded", "checks": checks}

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.database.sessionmaker() as session:
        yield session


async def get_http_client(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.http_client
    return client


SessionDep = Annotated[AsyncSession, Depends(get_session)]
HttpClientDep = Annotated[ServiceClient, Depends(get_http_client)]
