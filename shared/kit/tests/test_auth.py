"""Token status lookups: cached briefly, one lookup shared by concurrent requests, and a
user service that cannot answer is a 503 for the caller, never a 500 or a 401. Verified
tokens: remembered, and refused all the same once they expire or their key goes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from jwt.algorithms import RSAAlgorithm

from service_testing import LocalTokens, assert_problem, serve
from shared.auth import (
    CLOCK_SKEW_SECONDS,
    CurrentClaims,
    RemoteJWKS,
    RemoteUserStatus,
    TokenVerifier,
    UserStatus,
)
from shared.errors import Unauthorized, install_error_handlers
from shared.http import ServiceClient, UpstreamUnavailable
from shared.middleware import RequestContextMiddleware


class UserServiceDouble:
    """user_service's status route over an in-memory transport: counts calls, answers
    after `delay` seconds with `status` (or that HTTP status code)."""

    def __init__(self, *, delay: float = 0.05, code: int = 200) -> None:
        self.delay = delay
        self.code = code
        self.calls: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        await asyncio.sleep(self.delay)
        if self.code != 200:
            return httpx.Response(self.code, json={"status": self.code})
        return httpx.Response(200, json={"is_active": True, "role": "customer"})

    def client(self) -> ServiceClient:
        return ServiceClient(
            {"user": "http://user.test"}, retries=0, custom_transport=httpx.MockTransport(self)
        )


async def test_concurrent_requests_of_one_user_share_one_lookup() -> None:
    upstream = UserServiceDouble()
    users = RemoteUserStatus(upstream.client())
    user_id = uuid.uuid4()

    answers = await asyncio.gather(*(users.get_status(user_id) for _ in range(32)))

    assert answers == [UserStatus(is_active=True, role="customer")] * 32
    assert upstream.calls == [f"/internal/v1/users/{user_id}/status"]
    # Then cached: no further call.
    await users.get_status(user_id)
    assert len(upstream.calls) == 1


async def test_each_user_is_looked_up_on_their_own() -> None:
    upstream = UserServiceDouble()
    users = RemoteUserStatus(upstream.client())
    ids = [uuid.uuid4() for _ in range(3)]

    await asyncio.gather(*(users.get_status(user_id) for user_id in ids * 4))

    assert sorted(upstream.calls) == sorted(f"/internal/v1/users/{i}/status" for i in ids)


async def test_a_failed_lookup_fails_its_waiters_and_is_not_cached() -> None:
    upstream = UserServiceDouble(code=500)
    users = RemoteUserStatus(upstream.client())
    user_id = uuid.uuid4()

    results = await asyncio.gather(
        *(users.get_status(user_id) for _ in range(5)), return_exceptions=True
    )

    # user_service failing is a 503 for the caller (UpstreamUnavailable), not a 500.
    assert all(isinstance(result, UpstreamUnavailable) for result in results)
    assert len(upstream.calls) == 1
    upstream.code = 200
    assert await users.get_status(user_id) == UserStatus(is_active=True, role="customer")
    assert len(upstream.calls) == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others_lookup() -> None:
    upstream = UserServiceDouble(delay=0.2)
    users = RemoteUserStatus(upstream.client())
    user_id = uuid.uuid4()

    leaving = asyncio.create_task(users.get_status(user_id))
    staying = asyncio.create_task(users.get_status(user_id))
    await asyncio.sleep(0.05)
    leaving.cancel()

    assert await staying == UserStatus(is_active=True, role="customer")
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert len(upstream.calls) == 1


class FakeUserService:
    """The user service's JWKS and status routes, answering for `tokens`; an answer set
    in `jwks_answer` or `status_answer` replaces the route's own."""

    def __init__(self, tokens: LocalTokens) -> None:
        self.tokens = tokens
        self.jwks_answer: Response | None = None
        self.status_answer: Response | None = None
        self.app = FastAPI()
        public = RSAAlgorithm.to_jwk(tokens.private_key.public_key(), as_dict=True)

        @self.app.get("/v1/auth/jwks")
        async def jwks() -> Any:
            if self.jwks_answer is not None:
                return self.jwks_answer
            return {"keys": [{**public, "kid": tokens.kid, "alg": "RS256", "use": "sig"}]}

        @self.app.get("/internal/v1/users/{user_id}/status")
        async def status(user_id: uuid.UUID) -> Response:
            if self.status_answer is not None:
                return self.status_answer
            known = tokens.statuses.get(user_id)
            if known is None:
                return JSONResponse({"detail": "unknown"}, status_code=404)
            return JSONResponse({"is_active": known.is_active, "role": known.role})


@pytest.fixture
async def user_service() -> AsyncIterator[tuple[FakeUserService, str]]:
    fake = FakeUserService(LocalTokens())
    async with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
async def protected(user_service: tuple[FakeUserService, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A service whose one route needs a token, verified through the user service."""
    fake, url = user_service
    client = ServiceClient({"user": url}, retries=0)
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.state.token_verifier = TokenVerifier(
        RemoteJWKS(client),
        RemoteUserStatus(client, cache_seconds=0),
        issuer=fake.tokens.issuer,
        audience=fake.tokens.audience,
    )

    @app.get("/me")
    async def me(claims: CurrentClaims) -> dict[str, str]:
        return {"user_id": str(claims.user_id)}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        yield http
    await client.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        JSONResponse({"detail": "boom"}, status_code=500),
        JSONResponse({"detail": "down"}, status_code=503),
        JSONResponse({"detail": "no credential"}, status_code=401),
        Response(b"<html>not json</html>", status_code=200, media_type="text/html"),
        JSONResponse({"unexpected": True}),
    ],
    ids=["500", "503", "401", "not-json", "wrong-shape"],
)
async def test_a_failing_status_route_is_a_503(
    user_service: tuple[FakeUserService, str], protected: httpx.AsyncClient, answer: Response
) -> None:
    fake, _ = user_service
    token = fake.tokens.token()
    assert (await protected.get("/me", headers={"Authorization": f"Bearer {token}"})).is_success

    fake.status_answer = answer
    response = await protected.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 503)


async def test_a_failing_jwks_is_a_503(
    user_service: tuple[FakeUserService, str], protected: httpx.AsyncClient
) -> None:
    fake, _ = user_service
    fake.jwks_answer = JSONResponse({"detail": "boom"}, status_code=500)

    response = await protected.get(
        "/me", headers={"Authorization": f"Bearer {fake.tokens.token()}"}
    )
    assert_problem(response, 503)


class TestVerifiedTokens:
    @pytest.fixture
    def signature_checks(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Every token whose signature and claims PyJWT checks."""
        checked: list[str] = []
        decode = jwt.decode

        def counting(token: str, *args: Any, **kwargs: Any) -> Any:
            checked.append(token)
            return decode(token, *args, **kwargs)

        monkeypatch.setattr(jwt, "decode", counting)
        return checked

    async def test_a_token_is_checked_once(self, signature_checks: list[str]) -> None:
        tokens = LocalTokens()
        verifier = tokens.verifier()
        token, other = tokens.token(), tokens.token()

        first = await verifier.verify(token)
        assert await verifier.verify(token) == first
        await verifier.verify(other)
        await verifier.verify(other)

        assert signature_checks == [token, other]

    async def test_a_remembered_token_is_refused_once_it_expires(self) -> None:
        tokens = LocalTokens()
        verifier = tokens.verifier()
        # Expired already, but within the clock skew allowed for about two seconds more.
        token = tokens.token(expires_in=-(CLOCK_SKEW_SECONDS - 2))
        claims = await verifier.verify(token)

        await asyncio.sleep(claims.expires_at + CLOCK_SKEW_SECONDS - time.time() + 0.1)
        with pytest.raises(Unauthorized, match="expired"):
            await verifier.verify(token)

    async def test_a_remembered_token_is_refused_once_its_key_leaves_the_jwks(self) -> None:
        tokens = LocalTokens()
        verifier = tokens.verifier()
        token = tokens.token()
        await verifier.verify(token)

        tokens.kid = "the-next-key"  # the JWKS no longer has the key that signed it
        with pytest.raises(Unauthorized, match="unknown key"):
            await verifier.verify(token)

    async def test_a_key_replaced_under_the_same_id_checks_the_token_again(self) -> None:
        tokens = LocalTokens()
        verifier = tokens.verifier()
        token = tokens.token()
        await verifier.verify(token)

        tokens.jwk = LocalTokens().jwk  # another key, published under the same id
        with pytest.raises(Unauthorized, match="not valid"):
            await verifier.verify(token)
