"""Settings of the gateway: where the services are, and how the edge protects them."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode

from shared.config import ServiceSettings

#: Every service the gateway routes to, by the name `/health` reports it under.
SERVICE_NAMES = (
    "user_service",
    "product_service",
    "order_service",
    "inventory_service",
    "notification_service",
)

IPNetwork = IPv4Network | IPv6Network


class Settings(ServiceSettings):
    """Configuration of the gateway (environment variables, or a `.env` file)."""

    requires_database: ClassVar[bool] = False

    service_name: str = "api_gateway"

    product_service_url: str = "http://127.0.0.1:8002"
    order_service_url: str = "http://127.0.0.1:8003"
    inventory_service_url: str = "http://127.0.0.1:8004"
    notification_service_url: str = "http://127.0.0.1:8005"

    # Longer than a service's own calls to others (5 s), so that a slow dependency
    # reaches the client as that service's 503/504 rather than the gateway's.
    http_read_timeout: float = Field(default=15.0, gt=0)
    #: Which HTTP client library carries proxied requests (`GATEWAY_HTTP_TRANSPORT`).
    #: aiohttp by default: under load (wrk, 50 connections) httpcore's pool spends most
    #: of its time scanning idle connections, and the gateway managed about 0.4x the
    #: product service's own rate through httpx against about 1x through aiohttp.
    http_transport: Literal["httpx", "aiohttp"] = Field(
        default="aiohttp",
        validation_alias=AliasChoices("gateway_http_transport", "http_transport"),
    )

    #: Requests per minute per client, over a sliding window; 0 turns limiting off.
    rate_limit_per_minute: int = Field(default=300, ge=0)
    #: Shared counters for several gateway processes; in-process memory without it.
    redis_url: str = ""
    #: Peers whose `X-Forwarded-For`/`-Proto`/`-Host` are believed (comma-separated
    #: addresses or CIDRs). Only the loopback by default: a reverse proxy on the same
    #: host. Set it to the load balancer's network when there is one; anything wider
    #: lets a client choose the address it is rate-limited under. (uvicorn's own
    #: `--proxy-headers`, on by default for 127.0.0.1, agrees with this default; with
    #: other proxies, run with `--no-proxy-headers` and let this setting decide.)
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = (
        ip_network("127.0.0.1/32"),
        ip_network("::1/128"),
    )

    #: Longest `Authorization` header looked at; a longer one is refused with 401.
    max_authorization_bytes: int = Field(default=8192, ge=64)

    #: Anonymous reads that a service marks `Cache-Control: public, max-age=N` are
    #: answered from memory for N seconds (see `api_gateway.cache`): at most this many
    #: answers, each of at most `response_cache_max_body_bytes`; 0 turns the cache off.
    response_cache_entries: int = Field(default=10_000, ge=0)
    response_cache_max_body_bytes: int = Field(default=64 * 1024, ge=0)

    #: Event streams (`GET /api/v1/orders/{id}/stream`) go over a pool of their own, so
    #: that open streams never take the connections of ordinary calls; an upstream that
    #: sends nothing, not even its keep-alive comment (every 15 s at most), for this long
    #: is given up.
    stream_max_connections: int = Field(default=2000, ge=1)
    stream_read_timeout_seconds: float = Field(default=45.0, gt=15)

    #: Web origins whose pages may call the API from a browser (comma-separated, e.g.
    #: `https://shop.example.com`; `*` for any): CORS, preflights answered by the
    #: gateway without a token. None by default: the storefront is the gateway's own
    #: origin and needs none. Credentials are bearer tokens, never cookies.
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()

    #: Services `GET /health` checks (comma-separated). All of them by default: a
    #: deployment missing one is degraded. A partial deployment (say, only users and
    #: products while the rest is being built) lists what it runs.
    health_services: Annotated[tuple[str, ...], NoDecode] = SERVICE_NAMES
    health_timeout_seconds: float = Field(default=1.5, gt=0)
    #: `GET /health` answers from a result this young, so polling it cannot turn into
    #: a flood of readiness calls to every service.
    health_cache_seconds: float = Field(default=1.0, ge=0)

    #: How often `/openapi.json` asks a service again for its document, and how soon
    #: again when it did not answer (it comes up, its routes appear).
    openapi_refresh_seconds: float = Field(default=30.0, ge=0)
    openapi_retry_seconds: float = Field(default=2.0, ge=0)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(
                ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()
            )
        return value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        for origin in value if isinstance(value, list | tuple) else ():
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or *")
        return value

    @field_validator("health_services", mode="before")
    @classmethod
    def _parse_services(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            unknown = sorted(set(value) - set(SERVICE_NAMES))
            if unknown:
                raise ValueError(f"unknown services {unknown}; known: {list(SERVICE_NAMES)}")
        return value

    def service_urls(self) -> dict[str, str]:
        """Base URL of every service, by name."""
        return {
            "user_service": self.user_service_url,
            "product_service": self.product_service_url,
            "order_service": self.order_service_url,
            "inventory_service": self.inventory_service_url,
            "notification_service": self.notification_service_url,
        }
