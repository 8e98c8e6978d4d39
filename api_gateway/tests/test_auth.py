"""Edge authentication: public routes are open, everything else needs a valid token."""

from __future__ import annotations

import jwt
import pytest

from service_testing import LocalTokens, assert_problem
from shared.auth import TokenVerifier


class TestPublicRoutes:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/api/v1/auth/register"),
            ("POST", "/api/v1/auth/token"),
            ("POST", "/api/v1/auth/refresh"),
            ("GET", "/api/v1/auth/jwks"),
            ("GET", "/api/v1/products"),
            ("GET", "/api/v1/products?q=shoes"),
            ("GET", "/api/v1/products/7b1e"),
            ("HEAD", "/api/v1/products/7b1e"),
            ("GET", "/api/v1/inventory/7b1e"),
        ],
    )
    async def test_open_without_a_token(self, gateway, method, path) -> None:
        response = await gateway.request(method, path)
        assert response.status_code == 200, response.text

    async def test_a_bad_token_on_a_public_route_is_the_services_business(self, gateway) -> None:
        response = await gateway.get("/api/v1/products", headers={"Authorization": "Bearer junk"})
        assert response.status_code == 200


class TestProtectedRoutes:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/api/v1/users/me"),
            ("GET", "/api/v1/users"),
            ("POST", "/api/v1/products"),
            ("PATCH", "/api/v1/products/7b1e"),
            ("DELETE", "/api/v1/products/7b1e"),
            ("GET", "/api/v1/products/7b1e/secrets"),
            ("PUT", "/api/v1/inventory/7b1e"),
            ("GET", "/api/v1/inventory"),
            ("POST", "/api/v1/orders"),
            ("GET", "/api/v1/orders"),
            ("GET", "/api/v1/notifications"),
            ("GET", "/api/v1/auth/register"),
            ("POST", "/api/v1/auth/jwks"),
            ("DELETE", "/api/v1/auth/token"),
        ],
    )
    async def test_refused_without_a_token(self, gateway, upstreams, method, path) -> None:
        response = await gateway.request(method, path)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert all(not up.requests for up in upstreams.values())

    async def test_valid_token_is_let_through(self, gateway, tokens) -> None:
        response = await gateway.get("/api/v1/users/me", headers=tokens.headers())
        assert response.status_code == 200
        assert response.json()["service"] == "user"

    async def test_admin_token_is_let_through(self, gateway, tokens) -> None:
        response = await gateway.post(
            "/api/v1/products", json={}, headers=tokens.headers(role="admin")
        )
        assert response.status_code == 200


class TestBadTokens:
    async def refused(self, gateway, upstreams, authorization: str) -> None:
        response = await gateway.get("/api/v1/users/me", headers={"Authorization": authorization})
        assert_problem(response, 401)
        assert not upstreams["user"].requests

    @pytest.mark.parametrize(
        "authorization",
        [
            "Bearer",
            "Bearer ",
            "Bearer garbage",
            "Bearer a.b.c",
            "Basic dXNlcjpwYXNz",
            "bearer",
            "Token abc",
        ],
    )
    async def test_malformed(self, gateway, upstreams, authorization) -> None:
        await self.refused(gateway, upstreams, authorization)

    async def test_alg_none(self, gateway, upstreams, tokens) -> None:
        claims = jwt.decode(tokens.token(), options={"verify_signature": False})
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": tokens.kid})
        await self.refused(gateway, upstreams, f"Bearer {token}")

    async def test_hs256_signed_with_the_public_key(
        self, gateway, upstreams, tokens, forge_hs256
    ) -> None:
        await self.refused(gateway, upstreams, f"Bearer {forge_hs256(tokens)}")

    async def test_signed_by_another_key(self, gateway, upstreams) -> None:
        impostor = LocalTokens()  # same kid, different private key
        await self.refused(gateway, upstreams, f"Bearer {impostor.token()}")

    async def test_expired(self, gateway, upstreams, tokens) -> None:
        await self.refused(gateway, upstreams, f"Bearer {tokens.token(expires_in=-3600)}")

    async def test_wrong_audience(self, gateway, upstreams, tokens) -> None:
        await self.refused(gateway, upstreams, f"Bearer {tokens.token(aud='someone-else')}")

    async def test_deactivated_user(self, gateway, upstreams, tokens) -> None:
        await self.refused(gateway, upstreams, f"Bearer {tokens.token(active=False)}")

    @pytest.mark.parametrize("size", [5_000, 9_000, 100_000])
    async def test_oversized_authorization_header(self, gateway, upstreams, size) -> None:
        await self.refused(gateway, upstreams, "Bearer " + "a" * size)


class TestVerificationUnavailable:
    @pytest.mark.parametrize("http_transport", ["aiohttp", "httpx"])
    async def test_broken_key_source_is_a_503_not_a_500(
        self, make_gateway, tokens, http_transport
    ) -> None:
        class BrokenKeys:
            async def get_key(self, kid: str, *, refresh: bool = False):
                raise ValueError("the JWKS was not JSON")

        verifier = TokenVerifier(
            BrokenKeys(), tokens, issuer=tokens.issuer, audience=tokens.audience
        )
        async with make_gateway(token_verifier=verifier, http_transport=http_transport) as gateway:
            response = await gateway.get("/api/v1/users/me", headers=tokens.headers())
        assert_problem(response, 503)

    async def test_user_service_down_is_a_503(self, make_gateway, closed_port_url) -> None:
        # The real verifier, which fetches the JWKS from the (missing) user service.
        async with make_gateway(
            user_service_url=closed_port_url, http_retries=0, local_tokens=False
        ) as gateway:
            headers = LocalTokens().headers()
            response = await gateway.get("/api/v1/orders", headers=headers)
        assert_problem(response, 503)
