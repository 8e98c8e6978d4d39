"""Which hosts a webhook may be sent to.

In production an endpoint must not reach into the network the service runs in: a host
that resolves to a loopback, private, link-local (cloud metadata: 169.254.169.254),
shared, reserved or multicast address is refused, at registration and again before
every attempt, against the addresses the attempt then connects to (a name that resolved
to a public address at registration may resolve to 127.0.0.1 later: DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForbiddenHost(ValueError):
    """The URL's host is not one a webhook may be sent to."""


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


async def resolve_public(url: str) -> ResolvedUrl:
    """Resolve the URL's host; raise `ForbiddenHost` unless every address is public."""
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
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as error:
            raise ForbiddenHost(f"the host {host} does not resolve") from error
        addresses = tuple(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    refused = [str(address) for address in addresses if not is_public_address(address)]
    if refused or not addresses:
        raise ForbiddenHost(
            f"the host {host} resolves to an address webhooks may not reach ({', '.join(refused)})"
        )
    return ResolvedUrl(host=host, port=port, addresses=addresses)
