"""Service defaults as small named steps, in the spirit of eShop's `AddServiceDefaults()`:
a service's `main.py` lists what it uses and nothing else.

    service = ServiceBuilder(settings, title="Order service")  # logs, problems, request ids
    service.add_service_defaults()  # tracing, metrics, health
    service.add_database()
    service.add_http_client(upstreams={"product": settings.product_service_url})
    add_events(service, publishes=True)  # eventbus
    service.add_auth()
    service.add_sweeper(make_sweeper, name="sweeper", interval_seconds=5)
    service.add_routers(orders.router)
    return service.build()

Each step that owns a resource adds a lifespan part; the parts start in the order they
were added and stop in reverse, so a part may use what the earlier ones made. What the
parts make lives on `app.state` (Starlette's place for app-wide objects) and is reached
by routes only through the dependencies below (`get_database`, `get_http_client`,
`shared.auth.get_token_verifier`), which tests replace with `app.dependency_overrides`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from shared.auth import RemoteJWKS, RemoteUserStatus, TokenVerifier, document_admin_routes
from shared.config import ServiceSettings
from shared.db import Database
from shared.errors import ServiceUnavailable, install_error_handlers, method_not_allowed
from shared.heap import settled_heap
from shared.http import ServiceClient
from shared.logging import configure_logging
from shared.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from shared.service_auth import (
    INTERNAL_PREFIX,
    ServiceCredentialMiddleware,
    ServiceIdentity,
    ServiceKeys,
)
from shared.sweeps import RunningSweep, Sweeper
from shared.tracing import configure_tracing, span_export, trace_engine

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
ReadyCheck = Callable[[FastAPI], Awaitable[None]]
VerifierFactory = Callable[[FastAPI], TokenVerifier]

HEALTH_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
READINESS_TIMEOUT_SECONDS = 2.0


class ServiceBuilder:
    """Collects a service's steps; `build()` makes the FastAPI app.

    Every app gets JSON logs, RFC 9457 problem documents, request ids and a body size
    limit. `stream_request_bodies` hands a body without a length to the app as it
    arrives instead of reading it first (see `BodySizeLimitMiddleware`)."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        title: str,
        description: str = "",
        version: str = "1.0.0",
        stream_request_bodies: bool = False,
    ) -> None:
        configure_logging(settings.service_name, settings.log_level, settings.log_format)
        self.settings = settings
        self._app_options: dict[str, Any] = {
            "title": title,
            "description": description,
            "version": version,
        }
        self._stream_request_bodies = stream_request_bodies
        self._parts: list[Lifespan] = []
        self._routers: list[APIRouter] = []
        self._ready_checks: dict[str, ReadyCheck] = {}
        self._degraded_checks: dict[str, ReadyCheck] = {}
        self._upstreams: dict[str, str] = {}
        self._middleware: list[Middleware] = []
        self._health = False
        self._metrics = False

    # --- telemetry and probes -----------------------------------------------------------

    def add_service_defaults(self) -> None:
        """What every process has, like eShop's `AddServiceDefaults()`: tracing, metrics
        and the health probes."""
        self.add_tracing()
        self.add_metrics()
        self.add_health()

    def add_tracing(self) -> None:
        """OpenTelemetry traces, exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set."""
        if configure_tracing(self.settings):
            self.add_lifespan(lambda app: span_export())

    def add_metrics(self) -> None:
        """`GET /metrics`: the process's Prometheus metrics."""
        self._metrics = True

    def add_health(self) -> None:
        """`/health/live` and `/health/ready` (which runs the checks the steps add)."""
        self._health = True

    def add_ready_check(self, name: str, check: ReadyCheck, *, degraded: bool = False) -> None:
        """A check `/health/ready` runs: failing, it is a 503, or with `degraded` a 200
        that reports it."""
        (self._degraded_checks if degraded else self._ready_checks)[name] = check

    # --- resources ----------------------------------------------------------------------

    def add_lifespan(self, part: Lifespan) -> None:
        """Run `part` around the app's life, after the parts added before it."""
        self._parts.append(part)

    def add_database(self) -> None:
        """The service's database (`app.state.database`, `SessionDep`), checked by
        /health/ready, its queries traced."""
        settings = self.settings

        @asynccontextmanager
        async def database_lifespan(app: FastAPI) -> AsyncIterator[None]:
            database = Database(
                settings.effective_database_url(),
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                echo=settings.database_echo,
            )
            trace_engine(database.engine)
            app.state.database = database
            try:
                yield
            finally:
                await database.dispose()

        self.add_lifespan(database_lifespan)
        self.add_ready_check("database", _ping_database)

    def add_http_client(self, upstreams: Mapping[str, str] | None = None) -> None:
        """One `ServiceClient` (retries, circuit breakers) for the user service and
        `upstreams` (`app.state.http_client`, `HttpClientDep`)."""
        self._upstreams.update(upstreams or {})
        settings, all_upstreams = self.settings, self._upstreams

        @asynccontextmanager
        async def http_client_lifespan(app: FastAPI) -> AsyncIterator[None]:
            client = ServiceClient.from_settings(
                settings,
                {"user": settings.user_service_url, **all_upstreams},
                identity=ServiceIdentity.from_settings(settings),
            )
            app.state.http_client = client
            try:
                yield
            finally:
                await client.aclose()

        self.add_lifespan(http_client_lifespan)

    def add_auth(self, verifier: VerifierFactory | None = None) -> None:
        """Access-token verification (`CurrentClaims`, `AdminClaims`): by default against
        the user service's JWKS and account status, through the HTTP client (so
        `add_http_client` comes first); `verifier` builds another from the app."""
        settings = self.settings

        def remote(app: FastAPI) -> TokenVerifier:
            client: ServiceClient = app.state.http_client
            return TokenVerifier(
                RemoteJWKS(client, cache_seconds=settings.jwks_cache_seconds),
                RemoteUserStatus(client, cache_seconds=settings.user_status_cache_seconds),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            )

        build = verifier or remote

        @asynccontextmanager
        async def auth_lifespan(app: FastAPI) -> AsyncIterator[None]:
            app.state.token_verifier = build(app)
            yield

        self.add_lifespan(auth_lifespan)

    def add_sweeper(
        self, make: Callable[[FastAPI], Sweeper], *, name: str, interval_seconds: float
    ) -> None:
        """Run the sweeper `make` builds every `interval_seconds` in the background
        (`app.state.<name>`, a `RunningSweep`), from start-up until shutdown."""

        @asynccontextmanager
        async def sweeper_lifespan(app: FastAPI) -> AsyncIterator[None]:
            running = RunningSweep(make(app), name=name, interval_seconds=interval_seconds)
            setattr(app.state, name, running)
            running.start()
            try:
                yield
            finally:
                await running.stop()

        self.add_lifespan(sweeper_lifespan)

    def add_routers(self, *routers: APIRouter) -> None:
        self._routers.extend(routers)

    def add_middleware(self, middleware: Callable[..., ASGIApp], **options: Any) -> None:
        """ASGI middleware of the service's own, inside the defaults' (its answers have
        a request id, an access line, metrics and a span like the routes'); the first
        added is the outermost of them."""
        self._middleware.append(Middleware(middleware, **options))

    # --- the app ------------------------------------------------------------------------

    def build(self) -> FastAPI:
        # The heap settles last, once every other part has made what it keeps.
        parts = (*self._parts, settled_heap)

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with AsyncExitStack() as stack:
                for part in parts:
                    await stack.enter_async_context(part(app))
                yield

        app = FastAPI(
            **self._app_options,
            lifespan=lifespan,
            docs_url="/docs",
            redoc_url=None,
            # FastAPI's own OpenTelemetry spans and metrics, on as soon as a tracer
            # provider exists, are off: the request middleware makes the one span per
            # request (named like the metrics' routes), and Prometheus has the metrics.
            telemetry={"tracing": False, "metrics": False, "logs": False},
        )
        app.state.settings = self.settings
        install_error_handlers(app)
        # `add_middleware` makes each one the outermost so far: the innermost goes first.
        for middleware in reversed(self._middleware):
            app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
        if self._serves_internal_routes():
            # Innermost: a caller without a service credential is turned away before its
            # body is read, yet its 401 still carries the request id. (A process without
            # internal routes, the gateway, answers `/internal` with its plain 404.)
            app.add_middleware(
                ServiceCredentialMiddleware, keys=ServiceKeys.from_settings(self.settings)
            )
        app.add_middleware(
            BodySizeLimitMiddleware,
            max_bytes=self.settings.max_body_bytes,
            stream_chunked=self._stream_request_bodies,
        )
        app.add_middleware(
            RequestContextMiddleware,
            quiet_paths=HEALTH_PATHS,
            budget_seconds=self.settings.request_budget_seconds,
        )
        routers = [
            *([health_router(self._ready_checks, self._degraded_checks)] if self._health else []),
            *([metrics_router()] if self._metrics else []),
            *self._routers,
        ]
        for router in routers:
            document_admin_routes(router.routes)
            app.include_router(router)
        app.add_exception_handler(
            405, method_not_allowed(route for router in routers for route in router.routes)
        )
        return app

    def _serves_internal_routes(self) -> bool:
        return any(
            getattr(route, "path", "").startswith(INTERNAL_PREFIX)
            for router in self._routers
            for route in router.routes
        )


async def _ping_database(app: FastAPI) -> None:
    await app.state.database.ping()


def health_router(
    ready_checks: Mapping[str, ReadyCheck], degraded_checks: Mapping[str, ReadyCheck] | None = None
) -> APIRouter:
    """`/health/ready` is 503 when one of `ready_checks` fails; one of `degraded_checks`
    failing is reported (`status: "degraded"`) with a 200."""
    optional_checks = dict(degraded_checks or {})
    required_checks = dict(ready_checks)
    router = APIRouter(include_in_schema=False)

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        """The process is up and serving."""
        return {"status": "ok"}

    @router.get("/health/ready")
    async def ready(request: Request) -> dict[str, Any]:
        """The process can do its work: its dependencies answer."""
        checks: dict[str, str] = {}
        for name, check in {**required_checks, **optional_checks}.items():
            try:
                async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                    await check(request.app)
            except Exception:
                checks[name] = "unavailable"
            else:
                checks[name] = "ok"
        failed = [name for name in required_checks if checks[name] != "ok"]
        if failed:
            raise ServiceUnavailable(
                "A dependency is not ready: " + ", ".join(failed), extra={"checks": checks}
            )
        healthy = all(state == "ok" for state in checks.values())
        return {"status": "ok" if healthy else "degraded", "checks": checks}

    return router


def metrics_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def from_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency returning `app.state.<name>`, what one of the app's lifespan parts
    made: a service's `deps.py` names it (`get_payments = from_state("payments")`) and
    types it in an `Annotated` alias, and tests replace it with `dependency_overrides`."""

    async def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = dependency.__qualname__ = f"get_{name}"
    return dependency


async def app_settings(request: Request) -> ServiceSettings:
    """The settings the app was built with: the one way a route reaches them (a
    service's `deps.SettingsDep` narrows the type; `config.get_settings()` only reads
    the environment for `create_app`)."""
    settings: ServiceSettings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    async with database.sessionmaker() as session:
        yield session


async def get_http_client(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.http_client
    return client


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
HttpClientDep = Annotated[ServiceClient, Depends(get_http_client)]
