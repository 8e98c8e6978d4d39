"""Which hosts a webhook may be sent to.

In production an endpoint must not reach into the network the service runs in: a host
that resolves to a loopback, private, link-local (cloud metadata: 169.254.169.254),
shared, reserved or multicast address is refused, at registration and again before
every attempt, against the addresses the attempt then connects to (a name that resolved
to a public address at registration may resolve to 127.0.0.1 later: DNS rebinding).

Endpoint hosts are resolved by c-ares (aiodns), never by the event loop's `getaddrinfo`:
that one runs in libuv's pool of four threads, which the service's own lookups share
(user_service's host, the broker's), and any host name a customer's administrator typed
may take seconds to fail. A slow or dead endpoint's DNS then delays that endpoint alone.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiodns

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


#: Seconds c-ares waits for a name server's answer, and how many times it asks.
DNS_TIMEOUT_SECONDS = 2.0
DNS_TRIES = 2


class ForbiddenHost(ValueError):
    """The URL's host is not one a webhook may be sent to."""


class UnresolvedHost(ForbiddenHost):
    """The URL's host does not resolve (now: when sending, a network error like any)."""


@dataclass(frozen=True, slots=True)
class ResolvedUrl:
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def is_public_address(address: IPAddress) -> bool:
    """Only globally routable unicast addresses: `is_global` excludes loopback, private,
    link-local, shared (100.64/10), reserved and documentation ranges."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def dns_resolver() -> aiodns.DNSResolver:
    """A c-ares resolver (`async with` it, or `close` it when done); one serves any
    number of lookups at once."""
    return aiodns.DNSResolver(timeout=DNS_TIMEOUT_SECONDS, tries=DNS_TRIES)


async def resolve(url: str, resolver: aiodns.DNSResolver) -> ResolvedUrl:
    """The URL's host, port and the addresses of the host (a literal address: itself)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ForbiddenHost("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return ResolvedUrl(host=host, port=port, addresses=(literal,))
    try:
        found = await resolver.getaddrinfo(host, port=port, type=socket.SOCK_STREAM)
    except (aiodns.error.DNSError, UnicodeError, ValueError) as error:
        raise UnresolvedHost(f"the host {host} does not resolve") from error
    addresses = tuple(
        dict.fromkeys(ipaddress.ip_address(node.addr[0].decode()) for node in found.nodes)
    )
    if not addresses:
        raise UnresolvedHost(f"the host {host} does not resolve")
    return ResolvedUrl(host=host, port=port, addresses=addresses)


async def resolve_public(url: str, resolver: aiodns.DNSResolver) -> ResolvedUrl:
    """Resolve the URL's host; raise `ForbiddenHost` unless every address is public."""
    resolved = await resolve(url, resolver)
    refused = [str(address) for address in resolved.addresses if not is_public_address(address)]
    if refused:
        raise ForbiddenHost(
            f"the host {resolved.host} resolves to an address webhooks may not reach "
            f"({', '.join(refused)})"
        )
    return resolved
