"""`GET /health`: the readiness of every service behind the gateway, in one answer."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api_gateway.config import Settings
from shared.http import ServiceClient

ServiceHealth = Literal["healthy", "unhealthy", "unreachable"]


class GatewayHealth(BaseModel):
    status: Literal["healthy", "degraded"]
    services: dict[str, ServiceHealth]


class HealthChecker:
    """Asks each configured service's `/health/ready`, all at once, with a short timeout.

    It goes through the process's HTTP client but around the circuit breakers: a health
    check should neither be refused by an open circuit nor count towards opening one."""

    def __init__(self, client: ServiceClient, settings: Settings) -> None:
        self.client = client
        urls = settings.service_urls()
        self.urls = {
            name: f"{urls[name].rstrip('/')}/health/ready" for name in settings.health_services
        }
        self.timeout = settings.health_timeout_seconds
        self.cache_seconds = settings.health_cache_seconds
        self._cached: tuple[float, GatewayHealth] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> GatewayHealth:
        """The services' health, from a result at most `cache_seconds` old."""
        async with self._lock:  # callers arriving together share one round of checks
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            names = list(self.urls)
            states = await asyncio.gather(*(self._check_one(self.urls[name]) for name in names))
            services = dict(zip(names, states, strict=True))
            status: Literal["healthy", "degraded"] = (
                "healthy" if all(state == "healthy" for state in states) else "degraded"
            )
            result = GatewayHealth(status=status, services=services)
            self._cached = (time.monotonic(), result)
            return result

    async def _check_one(self, url: str) -> ServiceHealth:
        try:
            response = await self.client.http.get(url, timeout=self.timeout)
        except httpx.HTTPError:
            return "unreachable"
        return "healthy" if response.status_code == 200 else "unhealthy"


async def get_health_checker(request: Request) -> HealthChecker:
    checker: HealthChecker = request.app.state.health_checker
    return checker


HealthCheckerDep = Annotated[HealthChecker, Depends(get_health_checker)]

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=GatewayHealth,
    responses={503: {"model": GatewayHealth, "description": "At least one service is not ready."}},
)
async def read_health(checker: HealthCheckerDep) -> JSONResponse:
    """Health of every service behind the gateway: 200 when all are ready, 503 otherwise."""
    result = await checker.check()
    # 503 when degraded, so a load balancer or uptime probe sees trouble without parsing.
    return JSONResponse(result.model_dump(), status_code=200 if result.status == "healthy" else 503)
