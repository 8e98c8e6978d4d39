"""What headers the services see, and what the client gets back."""

from __future__ import annotations

import re

import pytest

from api_gateway.config import Settings


def received(response) -> dict[str, list[str]]:
    """The headers the echo service received, by lower-case name."""
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


class TestHopByHop:
    async def test_request_hop_by_hop_headers_are_stripped(self, gateway) -> None:
        response = await gateway.get(
            "/api/v1/products/1",
            headers={
                "Connection": "keep-alive, X-Named-By-Connection",
                "X-Named-By-Connection": "secret",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Trailer": "X-Checksum",
                "Upgrade": "websocket",
                "Proxy-Authorization": "Basic c2VjcmV0",
                "Proxy-Connection": "keep-alive",
                "X-Kept": "yes",
            },
        )
        seen = received(response)
        for name in (
            "x-named-by-connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
        ):
            assert name not in seen, name
        assert seen["x-kept"] == ["yes"]

    async def test_host_is_the_services_own(self, gateway, upstreams) -> None:
        response = await gateway.get("/api/v1/products/1")
        seen = received(response)
        assert seen["host"] == [upstreams["product"].url.removeprefix("http://")]
        assert seen["x-forwarded-host"] == ["gateway.test"]

    async def test_response_hop_by_hop_headers_are_stripped(self, gateway) -> None:
        response = await gateway.get("/api/v1/products/hop")
        assert response.json() == {"hop": True}
        for name in ("x-hop-named", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
            assert name not in response.headers, name
        assert response.headers["x-kept"] == "yes"
        # The gateway's request id, not the one the service made up.
        assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
        assert response.headers["x-request-id"] != "upstream-made-this-up"

    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    async def test_set_cookie_reaches_the_client_and_is_not_kept(
        self, make_gateway, upstreams, transport
    ) -> None:
        # By host name: aiohttp's cookie jar ignores cookies from bare IP addresses.
        url = upstreams["product"].url.replace("127.0.0.1", "localhost")
        async with make_gateway(http_transport=transport, product_service_url=url) as gateway:
            response = await gateway.get("/api/v1/products/cookie")
            assert "session=user-a-secret" in response.headers["set-cookie"]
            # One process-wide client relays every user's responses: it must not keep
            # one user's cookie and send it along with the next user's request.
            gateway.cookies.clear()
            response = await gateway.get("/api/v1/products/cookie")
            assert response.json() == {"cookie": None}
            assert not gateway.app.state.http_client.http.cookies


class TestForwardedHeaders:
    async def test_forwarded_for_from_a_trusted_proxy_names_the_client(self, gateway) -> None:
        response = await gateway.get(
            "/api/v1/products/1",
            headers={
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "shop.example",
            },
        )
        seen = received(response)
        assert seen["x-forwarded-for"] == ["203.0.113.7"]
        assert seen["x-forwarded-proto"] == ["https"]
        assert seen["x-forwarded-host"] == ["shop.example"]

    async def test_an_address_the_client_wrote_in_front_of_the_chain_is_not_passed_on(
        self, gateway
    ) -> None:
        # What an edge proxy sends when the client set X-Forwarded-For itself: the
        # client's own entry first, then the address the edge saw. A service taking
        # the left-most entry must not be handed the made-up one.
        response = await gateway.get(
            "/api/v1/products/1", headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}
        )
        assert received(response)["x-forwarded-for"] == ["203.0.113.7"]

    async def test_forwarded_headers_from_anyone_else_are_replaced(self, make_gateway) -> None:
        async with make_gateway(client=("198.51.100.20", 40000)) as gateway:
            response = await gateway.get(
                "/api/v1/products/1",
                headers={
                    "X-Forwarded-For": "10.0.0.1",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "evil.example",
                    "Forwarded": "for=10.0.0.1",
                },
            )
        seen = received(response)
        assert seen["x-forwarded-for"] == ["198.51.100.20"]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-forwarded-host"] == ["gateway.test"]
        assert "forwarded" not in seen

    async def test_authorization_is_forwarded_unchanged(self, gateway, tokens) -> None:
        headers = tokens.headers()
        response = await gateway.get("/api/v1/users/me", headers=headers)
        assert received(response)["authorization"] == [headers["Authorization"]]


class TestRequestId:
    async def test_sane_client_id_is_kept_and_forwarded(self, gateway) -> None:
        response = await gateway.get("/api/v1/products/1", headers={"X-Request-ID": "abc-123.x:y"})
        assert response.headers["x-request-id"] == "abc-123.x:y"
        assert received(response)["x-request-id"] == ["abc-123.x:y"]

    @pytest.mark.parametrize("bad", ["has spaces", "x" * 200, "semi;colon", "<script>"])
    async def test_insane_client_id_is_replaced(self, gateway, bad) -> None:
        response = await gateway.get("/api/v1/products/1", headers={"X-Request-ID": bad})
        request_id = response.headers["x-request-id"]
        assert request_id != bad
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        assert received(response)["x-request-id"] == [request_id]

    async def test_new_id_when_none_sent(self, gateway) -> None:
        response = await gateway.get("/api/v1/products/1")
        assert received(response)["x-request-id"] == [response.headers["x-request-id"]]


class TestNothingAdded:
    @pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
    async def test_headers_the_client_did_not_send_are_not_added(
        self, make_gateway, transport
    ) -> None:
        async with make_gateway(http_transport=transport) as gateway:
            request = gateway.build_request("POST", "/api/v1/auth/register", content=b"{}")
            for name in ("accept", "accept-encoding", "user-agent", "content-type"):
                request.headers.pop(name, None)
            response = await gateway.send(request)
        seen = received(response)
        for name in ("accept", "accept-encoding", "user-agent", "content-type"):
            assert name not in seen, (name, seen.get(name))


class TestCors:
    """Pages of the origins in `CORS_ALLOW_ORIGINS` may call the API from a browser."""

    SHOP = "https://shop.example.com"

    async def test_a_preflight_is_answered_without_a_token(self, make_gateway) -> None:
        async with make_gateway(cors_allow_origins=self.SHOP) as gateway:
            response = await gateway.options(
                "/api/v1/orders",
                headers={
                    "Origin": self.SHOP,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, idempotency-key",
                },
            )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == self.SHOP
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "idempotency-key" in allowed
        assert "access-control-allow-credentials" not in response.headers

    async def test_answers_say_who_may_read_them(self, make_gateway) -> None:
        async with make_gateway(
            cors_allow_origins=f"{self.SHOP}, https://admin.example.com/"
        ) as gateway:
            allowed = await gateway.get("/api/v1/products/1", headers={"Origin": self.SHOP})
            other = await gateway.get(
                "/api/v1/products/1", headers={"Origin": "https://evil.example.net"}
            )
        assert allowed.headers["access-control-allow-origin"] == self.SHOP
        assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-origin" not in other.headers

    async def test_none_by_default(self, gateway) -> None:
        response = await gateway.get("/api/v1/products/1", headers={"Origin": self.SHOP})
        assert "access-control-allow-origin" not in response.headers

    def test_an_origin_must_be_one(self) -> None:
        with pytest.raises(ValueError, match="not an origin"):
            Settings(_env_file=None, cors_allow_origins="shop.example.com")  # type: ignore[call-arg]
