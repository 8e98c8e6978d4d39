"""The routing table: which service owns each `/api/v1/<resource>`, and which routes
need no access token. Anything not listed here (`/internal`, a typo) is a 404."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from api_gateway.errors import BadPath
from shared.errors import NotFound

API_PREFIX = b"/api/v1/"


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    resource: str
    upstream: str

    @property
    def path(self) -> str:
        """The template metrics and access logs name this route by."""
        return f"/api/v1/{self.resource}/{{path}}"


ROUTES: dict[str, ProxyRoute] = {
    route.resource: route
    for route in (
        ProxyRoute("auth", "user"),
        ProxyRoute("users", "user"),
        ProxyRoute("products", "product"),
        ProxyRoute("orders", "order"),
        ProxyRoute("cart", "order"),
        ProxyRoute("inventory", "inventory"),
        ProxyRoute("notifications", "notification"),
        ProxyRoute("webhooks", "notification"),
    )
}

#: Routes anyone may call; "*" is one path segment (an id). HEAD counts as GET.
PUBLIC_ROUTES = frozenset(
    {
        ("POST", ("auth", "register")),
        ("POST", ("auth", "token")),
        ("POST", ("auth", "refresh")),
        ("GET", ("auth", "jwks")),
        ("GET", ("products",)),
        ("GET", ("products", "*")),
        ("GET", ("inventory", "*")),
    }
)

#: Routes whose answer is an endless event stream: relayed as it comes, without the
#: read timeout of ordinary calls, over connections of their own (see `proxy`).
STREAM_ROUTES = frozenset({("GET", ("orders", "*", "stream"))})

# A dot, slash, backslash, percent or NUL has no business being percent-encoded in our
# paths; encoded, each is a classic way past a path check (`%2e%2e/`, `%252e`, `..%5c`).
_ENCODED_FORBIDDEN = (b"%2e", b"%2f", b"%5c", b"%25", b"%00")
_DOT_SEGMENTS = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: the route, the path on the service and whether it is public."""

    route: ProxyRoute
    path: str
    public: bool
    stream: bool = False


@lru_cache(maxsize=4096)
def resolve(method: str, raw_path: bytes, path: str) -> Target:
    """Map a request path to its service, refusing traversal tricks and unknown routes.

    `raw_path` is checked as the client sent it (before percent-decoding) and `path`
    after it, so that no encoding can smuggle a `..` past the check. Remembered (a
    refusal is not): the checks were a tenth of a proxied read's cost in the gateway,
    and the same paths (a popular product) come again and again; a `Target` is frozen.
    """
    if not raw_path.startswith(API_PREFIX):
        raise NotFound("No such route.")
    if not raw_path.isascii() or b"\\" in raw_path:
        raise BadPath("The path contains characters that are not allowed.")
    lowered = raw_path.lower()
    for encoded in _ENCODED_FORBIDDEN:
        if encoded in lowered:
            raise BadPath("The path contains an encoded character that is not allowed.")
    rest = raw_path[len(API_PREFIX) :].decode("ascii")
    segments = rest.split("/")
    if not _DOT_SEGMENTS.isdisjoint(segments) or not _DOT_SEGMENTS.isdisjoint(path.split("/")):
        raise BadPath("The path contains `.` or `..` segments.")
    if "\\" in path or "\x00" in path:
        raise BadPath("The path contains characters that are not allowed.")
    route = ROUTES.get(segments[0])
    if route is None:
        raise NotFound("No such route.")
    return Target(
        route=route,
        path="/v1/" + rest,
        public=is_public(method, segments),
        stream=is_stream(method, segments),
    )


def is_public(method: str, segments: list[str]) -> bool:
    """Whether a route needs no access token (`segments`: the path after `/api/v1/`)."""
    if method == "HEAD":
        method = "GET"
    if len(segments) > 1 and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash names the same route
    key = tuple(segments)
    if (method, key) in PUBLIC_ROUTES:
        return True
    return len(key) == 2 and key[1] != "" and (method, (key[0], "*")) in PUBLIC_ROUTES


def is_stream(method: str, segments: list[str]) -> bool:
    """Whether a route answers with an event stream (`segments` as for `is_public`)."""
    if method != "GET" or len(segments) != 3 or not segments[1]:
        return False
    return (method, (segments[0], "*", segments[2])) in STREAM_ROUTES
