"""The headers of a proxied exchange, as pure functions: headers in, headers out.

The proxy calls these once per request on its hot path, so each is one pass over the
raw ASGI header list with no parsing beyond what a decision needs; none does any I/O,
so each can be tested with a list of pairs and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RawHeaders = list[tuple[bytes, bytes]]

#: Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones the gateway sets itself.
REQUEST_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"expect",  # the gateway answers `100-continue` itself
        b"x-request-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    }
)
RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"date",  # the gateway's server sets its own Date and Server
        b"server",
    }
)


@dataclass(slots=True)
class ClientHeaders:
    """What one pass over the client's headers found.

    `kept` are the headers forwarded as they are; the rest are the dropped headers the
    gateway still acts upon (`None` when the client did not send them).
    """

    kept: RawHeaders
    authorization: bytes | None = None
    cache_control: bytes | None = None
    host: bytes | None = None
    forwarded_for: bytes | None = None
    forwarded_proto: bytes | None = None
    forwarded_host: bytes | None = None
    has_body: bool = False


@dataclass(slots=True)  # not frozen: a frozen dataclass is 4x slower to make
class Hop:
    """This hop, as the forwarded headers describe it to the service."""

    client: str  # the client's address as the gateway resolved it ("" when unknown)
    peer_trusted: bool  # whether the peer's own X-Forwarded-Proto and -Host are believed
    scheme: str
    request_id: str


def read_client_headers(raw: Iterable[tuple[bytes, bytes]]) -> ClientHeaders:
    """Split the client's headers into those forwarded unchanged and those acted upon.

    Dropped: hop-by-hop headers, `Proxy-*`, the ones the gateway sets itself, and any
    header the client's `Connection` names.
    """
    # One plain loop with locals: this runs for every request, and is the cheapest
    # shape CPython has for it (a dict of dropped headers cost a fifth more).
    client = ClientHeaders([])
    kept = client.kept
    connection = None
    for name, value in raw:
        if name in REQUEST_DROP:
            if name == b"host":
                client.host = value
            elif name == b"x-forwarded-for":
                # Repeated lines are one list (RFC 9110 section 5.3).
                earlier = client.forwarded_for
                client.forwarded_for = value if earlier is None else earlier + b"," + value
            elif name == b"x-forwarded-proto":
                client.forwarded_proto = value
            elif name == b"x-forwarded-host":
                client.forwarded_host = value
            elif name == b"connection":
                connection = value
            elif name == b"transfer-encoding":
                client.has_body = True
        elif not name.startswith(b"proxy-"):
            if name == b"authorization":
                client.authorization = value
            elif name == b"content-length":
                client.has_body = value != b"0"
            elif name == b"cache-control":
                client.cache_control = value
            kept.append((name, value))
    if connection is not None:
        client.kept = drop_connection_named(kept, connection)
    return client


def upstream_headers(client: ClientHeaders, hop: Hop) -> RawHeaders:
    """The headers the service gets: the client's kept ones, then X-Forwarded-For,
    -Proto, -Host and the request id.

    X-Forwarded-For is one address, the client's as the gateway resolved it (the
    nearest address in the chain that no trusted proxy is at), never the chain: a
    service trusts its gateway's header wholesale (the images run uvicorn with
    `FORWARDED_ALLOW_IPS=*`, which takes the left-most entry), so a chain would let a
    client write the address it is throttled and logged under in front of the real
    one. A trusted peer's -Proto and -Host are passed on; anyone else's are replaced by
    what the gateway saw.
    """
    headers = list(client.kept)
    trusted = hop.peer_trusted
    if hop.client:
        headers.append((b"x-forwarded-for", hop.client.encode("latin-1")))
    proto = client.forwarded_proto if trusted and client.forwarded_proto else None
    headers.append((b"x-forwarded-proto", proto or hop.scheme.encode("latin-1")))
    host = client.forwarded_host if trusted and client.forwarded_host else client.host
    if host:
        headers.append((b"x-forwarded-host", host))
    headers.append((b"x-request-id", hop.request_id.encode("latin-1")))
    return headers


def client_response_headers(
    raw: Iterable[tuple[bytes, bytes]], origin: bytes
) -> tuple[RawHeaders, int | None]:
    """The service's response headers as the client gets them, and the body's length
    when the service declared one.

    Hop-by-hop headers, `Proxy-*` and whatever `Connection` names are dropped; a
    `Location` on the service's own origin is pointed at the gateway instead.
    """
    headers: RawHeaders = []
    connection = None
    length: int | None = None
    for raw_name, value in raw:
        name = raw_name.lower()
        if name in RESPONSE_DROP or name.startswith(b"proxy-"):
            if name == b"connection":
                connection = value
            continue
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"location":
            value = rewrite_location(value, origin)
        headers.append((name, value))
    if connection is not None:
        headers = drop_connection_named(headers, connection)
    return headers, length


def drop_connection_named(headers: RawHeaders, connection: bytes) -> RawHeaders:
    """`headers` without those that a `Connection` header names (hop-by-hop by name)."""
    named = {token.strip().lower() for token in connection.split(b",")}
    return [(name, value) for name, value in headers if name not in named]


def rewrite_location(value: bytes, origin: bytes) -> bytes:
    """Point a redirect at the gateway, not at the service behind it."""
    if value.startswith(origin):
        value = value[len(origin) :]
    if value.startswith(b"/v1/"):
        return b"/api" + value
    return value


def upstream_url(base: str, path: str, query: bytes) -> str:
    """The service's URL for a request: its base, the path on it, the query as sent."""
    if query:
        return f"{base}{path}?{query.decode('latin-1')}"
    return base + path
