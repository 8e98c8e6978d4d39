"""One attempt of one delivery: the signed POST and what came of it."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from standardwebhooks.webhooks import Webhook

from notification_service.webhooks.url_guard import ForbiddenHost, resolve_public

USER_AGENT = "ecommerce-webhooks/1.0"
ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Attempt:
    response_status: int | None
    error: str | None
    duration_ms: int
    retry_after: str | None = None


def signed_headers(secret: str, event_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: the id (the event's, the same on every retry), the
    timestamp and `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class WebhookSender:
    """Posts deliveries with one long-lived client; no redirects are followed (a 3xx is
    an answer like any other), and the whole attempt has `timeout_seconds`."""

    def __init__(
        self, *, timeout_seconds: float, block_private_hosts: bool, max_connections: int
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.block_private_hosts = block_private_hosts
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, url: str, secret: str, event_id: str, body: str) -> Attempt:
        started = time.perf_counter()
        headers = signed_headers(secret, event_id, body, datetime.now(UTC))
        try:
            request = await self._request(url, headers, body)
            async with asyncio.timeout(self.timeout_seconds):
                response = await self.client.send(request)
                await response.aclose()
        except ForbiddenHost as error:
            return Attempt(None, f"refused: {error}"[:ERROR_LENGTH], _ms_since(started))
        except (httpx.HTTPError, TimeoutError, OSError) as error:
            return Attempt(None, _describe(error)[:ERROR_LENGTH], _ms_since(started))
        return Attempt(
            response.status_code,
            None if response.is_success else f"HTTP {response.status_code}",
            _ms_since(started),
            retry_after=response.headers.get("retry-after"),
        )

    async def _request(self, url: str, headers: dict[str, str], body: str) -> httpx.Request:
        """In production the request goes to an address just checked to be public, with
        the name in `Host` and in the TLS handshake (SNI and certificate check), so the
        connection cannot land anywhere the check did not see."""
        if not self.block_private_hosts:
            return self.client.build_request("POST", url, headers=headers, content=body)
        resolved = await resolve_public(url)
        address = resolved.addresses[0]
        parts = urlsplit(url)
        literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        netloc = f"{literal}:{resolved.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rsplit("@", 1)[-1]
        return self.client.build_request(
            "POST",
            pinned,
            headers={**headers, "host": host_header},
            content=body,
            extensions={"sni_hostname": resolved.host},
        )


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return "timeout"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
