"""The proxy's decisions as pure functions: headers in, headers out, paths to routes.

The tests through a running gateway (test_headers, test_routing) say what a client and
a service see; these pin each decision down on its own, with no server in the way.
"""

from __future__ import annotations

import pytest

from api_gateway.errors import BadPath
from api_gateway.headers import (
    ClientHeaders,
    Hop,
    client_response_headers,
    read_client_headers,
    rewrite_location,
    upstream_headers,
    upstream_url,
)
from api_gateway.routing import is_public, resolve
from shared.errors import NotFound

TRUSTED = Hop(client="203.0.113.7", peer_trusted=True, scheme="http", request_id="rid")
STRANGER = Hop(client="198.51.100.20", peer_trusted=False, scheme="http", request_id="rid")


class TestReadClientHeaders:
    def test_end_to_end_headers_are_kept_in_order(self) -> None:
        raw = [(b"accept", b"*/*"), (b"x-kept", b"1"), (b"accept", b"text/html")]
        assert read_client_headers(raw).kept == raw

    @pytest.mark.parametrize(
        "name",
        [
            b"connection",
            b"keep-alive",
            b"te",
            b"trailer",
            b"upgrade",
            b"host",
            b"expect",
            b"x-request-id",
            b"forwarded",
            b"proxy-authorization",
            b"proxy-connection",
        ],
    )
    def test_hop_by_hop_and_gateway_set_headers_are_dropped(self, name: bytes) -> None:
        assert read_client_headers([(name, b"v"), (b"x-kept", b"1")]).kept == [(b"x-kept", b"1")]

    def test_headers_named_by_connection_are_dropped(self) -> None:
        raw = [
            (b"connection", b"keep-alive, X-Secret"),
            (b"x-secret", b"s"),
            (b"x-kept", b"1"),
        ]
        assert read_client_headers(raw).kept == [(b"x-kept", b"1")]

    def test_what_the_gateway_acts_upon_is_noted(self) -> None:
        client = read_client_headers(
            [
                (b"host", b"shop.test"),
                (b"authorization", b"Bearer t"),
                (b"x-forwarded-for", b"203.0.113.7"),
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"shop.example"),
            ]
        )
        assert client == ClientHeaders(
            kept=[(b"authorization", b"Bearer t")],
            authorization=b"Bearer t",
            host=b"shop.test",
            forwarded_for=b"203.0.113.7,10.0.0.1",
            forwarded_proto=b"https",
            forwarded_host=b"shop.example",
            has_body=False,
        )

    @pytest.mark.parametrize(
        ("raw", "has_body"),
        [
            ([], False),
            ([(b"content-length", b"0")], False),
            ([(b"content-length", b"12")], True),
            ([(b"transfer-encoding", b"chunked")], True),
        ],
    )
    def test_body_is_expected_from_its_length_or_chunking(
        self, raw: list[tuple[bytes, bytes]], has_body: bool
    ) -> None:
        assert read_client_headers(raw).has_body is has_body


class TestUpstreamHeaders:
    def test_trusted_proxy_chain_is_believed_as_the_one_address_it_resolves_to(self) -> None:
        client = read_client_headers(
            [
                (b"host", b"gateway.test"),
                (b"x-forwarded-for", b"203.0.113.7"),
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"shop.example"),
            ]
        )
        assert upstream_headers(client, TRUSTED) == [
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"shop.example"),
            (b"x-request-id", b"rid"),
        ]

    def test_anyone_elses_forwarded_headers_are_replaced(self) -> None:
        client = read_client_headers(
            [
                (b"host", b"gateway.test"),
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"evil.example"),
            ]
        )
        assert upstream_headers(client, STRANGER) == [
            (b"x-forwarded-for", b"198.51.100.20"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"gateway.test"),
            (b"x-request-id", b"rid"),
        ]

    def test_unknown_peer_and_host_add_nothing_made_up(self) -> None:
        hop = Hop(client="", peer_trusted=False, scheme="https", request_id="rid")
        assert upstream_headers(read_client_headers([(b"x-kept", b"1")]), hop) == [
            (b"x-kept", b"1"),
            (b"x-forwarded-proto", b"https"),
            (b"x-request-id", b"rid"),
        ]

    def test_the_clients_kept_list_is_not_changed(self) -> None:
        client = read_client_headers([(b"x-kept", b"1")])
        upstream_headers(client, TRUSTED)
        assert client.kept == [(b"x-kept", b"1")]


class TestClientResponseHeaders:
    ORIGIN = b"http://127.0.0.1:8002"

    def test_hop_by_hop_and_connection_named_headers_are_dropped(self) -> None:
        headers, _ = client_response_headers(
            [
                (b"Connection", b"X-Hop"),
                (b"X-Hop", b"secret"),
                (b"Keep-Alive", b"timeout=5"),
                (b"Proxy-Authenticate", b"Basic"),
                (b"Date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
                (b"Server", b"uvicorn"),
                (b"Content-Type", b"application/json"),
            ],
            self.ORIGIN,
        )
        assert headers == [(b"content-type", b"application/json")]

    @pytest.mark.parametrize(
        ("raw", "length"),
        [
            ([(b"content-length", b"42")], 42),
            ([(b"content-length", b"nonsense")], None),
            ([], None),
        ],
    )
    def test_declared_length_is_read(
        self, raw: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        assert client_response_headers(raw, self.ORIGIN)[1] == length

    def test_location_is_pointed_at_the_gateway(self) -> None:
        headers, _ = client_response_headers(
            [(b"location", self.ORIGIN + b"/v1/products/2")], self.ORIGIN
        )
        assert headers == [(b"location", b"/api/v1/products/2")]

    @pytest.mark.parametrize(
        ("location", "rewritten"),
        [
            (b"/v1/orders/1", b"/api/v1/orders/1"),
            (b"https://elsewhere.example/v1/x", b"https://elsewhere.example/v1/x"),
            (b"/health/ready", b"/health/ready"),
        ],
    )
    def test_only_the_services_own_api_paths_are_rewritten(
        self, location: bytes, rewritten: bytes
    ) -> None:
        assert rewrite_location(location, self.ORIGIN) == rewritten


class TestUpstreamUrl:
    def test_query_is_passed_as_sent(self) -> None:
        assert (
            upstream_url("http://svc", "/v1/products", b"q=caf%C3%A9&limit=2")
            == "http://svc/v1/products?q=caf%C3%A9&limit=2"
        )

    def test_no_query_no_question_mark(self) -> None:
        assert upstream_url("http://svc", "/v1/products", b"") == "http://svc/v1/products"


class TestResolve:
    @pytest.mark.parametrize(
        ("path", "upstream", "service_path"),
        [
            ("/api/v1/auth/token", "user", "/v1/auth/token"),
            ("/api/v1/users/me", "user", "/v1/users/me"),
            ("/api/v1/products", "product", "/v1/products"),
            ("/api/v1/orders/1/cancel", "order", "/v1/orders/1/cancel"),
            ("/api/v1/inventory/1", "inventory", "/v1/inventory/1"),
            ("/api/v1/notifications", "notification", "/v1/notifications"),
        ],
    )
    def test_resource_names_its_service(self, path: str, upstream: str, service_path: str) -> None:
        target = resolve("GET", path.encode(), path)
        assert (target.route.upstream, target.path) == (upstream, service_path)

    @pytest.mark.parametrize(
        "path", ["/internal/x", "/api/v1/internal/x", "/api/v2/products", "/api/v1/nope"]
    )
    def test_anything_else_is_not_found(self, path: str) -> None:
        with pytest.raises(NotFound):
            resolve("GET", path.encode(), path)

    @pytest.mark.parametrize(
        ("raw", "decoded"),
        [
            (b"/api/v1/products/%2e%2e/x", "/api/v1/products/../x"),
            (b"/api/v1/products/%252e", "/api/v1/products/%2e"),
            (b"/api/v1/products/../users", "/api/v1/products/../users"),
            (b"/api/v1/products/a\\b", "/api/v1/products/a\\b"),
            (b"/api/v1/products/%00", "/api/v1/products/\x00"),
        ],
    )
    def test_traversal_is_refused(self, raw: bytes, decoded: str) -> None:
        with pytest.raises(BadPath):
            resolve("GET", raw, decoded)


class TestIsPublic:
    @pytest.mark.parametrize(
        ("method", "segments", "public"),
        [
            ("GET", ["products"], True),
            ("HEAD", ["products", "42"], True),
            ("GET", ["products", "42", ""], True),
            ("POST", ["products"], False),
            ("GET", ["products", "42", "secret"], False),
            ("POST", ["auth", "token"], True),
            ("GET", ["auth", "token"], False),
            ("GET", ["inventory", "42"], True),
            ("PUT", ["inventory", "42"], False),
            ("GET", ["orders"], False),
            ("GET", ["users", "me"], False),
        ],
    )
    def test_public_routes(self, method: str, segments: list[str], public: bool) -> None:
        assert is_public(method, segments) is public
