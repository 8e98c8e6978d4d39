"""One attempt of one delivery: the signed POST and what came of it."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import aiodns
import httpx
from standardwebhooks.webhooks import Webhook

from notification_service.webhooks.url_guard import (
    ForbiddenHost,
    IPAddress,
    ResolvedUrl,
    UnresolvedHost,
    dns_resolver,
    resolve,
    resolve_public,
)

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
    an answer like any other), and the whole attempt (the host's lookup included) has
    `timeout_seconds`.

    The request goes to an address of the host just resolved (`url_guard`), with the
    name in `Host` and in the TLS handshake (SNI and certificate check): the lookup is
    c-ares's, not the loop's, and in production the connection cannot land anywhere the
    check did not see. The host's addresses are tried in turn until one connects, each
    but the last with its share of the attempt to connect."""

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
        #: Made at the first attempt (it needs the running loop), kept for the next.
        self._resolver: aiodns.DNSResolver | None = None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._resolver is not None:
            await self._resolver.close()

    async def send(self, url: str, secret: str, event_id: str, body: str) -> Attempt:
        started = time.perf_counter()
        headers = signed_headers(secret, event_id, body, datetime.now(UTC))
        try:
            async with asyncio.timeout(self.timeout_seconds):
                response = await self._post(url, headers, body)
        except UnresolvedHost as error:
            return Attempt(None, str(error)[:ERROR_LENGTH], _ms_since(started))
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

    async def _post(self, url: str, headers: dict[str, str], body: str) -> httpx.Response:
        if self._resolver is None:
            self._resolver = dns_resolver()
        check = resolve_public if self.block_private_hosts else resolve
        resolved = await check(url, self._resolver)
        *others, last = resolved.addresses
        # An address that never answers (a firewall dropping the packets) has its share
        # of the attempt to connect, not all of it: the next address gets the rest.
        share = httpx.Timeout(
            self.timeout_seconds, connect=self.timeout_seconds / len(resolved.addresses)
        )
        for address in others:
            try:
                return await self._post_to(address, resolved, url, headers, body, share)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                continue  # the next address of the host
        return await self._post_to(last, resolved, url, headers, body, self.client.timeout)

    async def _post_to(
        self,
        address: IPAddress,
        resolved: ResolvedUrl,
        url: str,
        headers: dict[str, str],
        body: str,
        limits: httpx.Timeout,
    ) -> httpx.Response:
        parts = urlsplit(url)
        literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        pinned = urlunsplit(
            (parts.scheme, f"{literal}:{resolved.port}", parts.path or "/", parts.query, "")
        )
        request = self.client.build_request(
            "POST",
            pinned,
            headers={**headers, "host": parts.netloc.rsplit("@", 1)[-1]},
            content=body,
            extensions={"sni_hostname": resolved.host},
            timeout=limits,
        )
        response = await self.client.send(request)
        await response.aclose()
        return response


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return "timeout"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
