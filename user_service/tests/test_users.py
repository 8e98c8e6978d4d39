"""Profiles, administration and what tokens may do, through the HTTP API."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from service_testing import assert_problem, service_headers
from shared.service_auth import SERVICE_NAMES


class TestOwnProfile:
    async def test_reads_own_profile(self, api: Any, client: httpx.AsyncClient) -> None:
        user = await api.register()
        response = await client.get("/v1/users/me", headers=await api.headers())
        assert response.status_code == 200
        assert response.json() == user

    async def test_changes_name_and_password(self, api: Any, client: httpx.AsyncClient) -> None:
        await api.register()
        headers = await api.headers()
        old_session = await api.login()
        response = await client.patch(
            "/v1/users/me",
            json={"full_name": "Ada King", "password": "new-password-1"},
            headers=headers,
        )
        assert response.status_code == 200
        assert response.json()["full_name"] == "Ada King"
        await api.login(password="new-password-1")
        wrong = await client.post(
            "/v1/auth/token", data={"username": "ada@example.com", "password": "correct-horse"}
        )
        assert_problem(wrong, 401)
        # A new password ends the other sessions.
        refresh = await client.post(
            "/v1/auth/refresh", json={"refresh_token": old_session["refresh_token"]}
        )
        assert_problem(refresh, 401)

    @pytest.mark.parametrize(
        "body",
        [
            {"role": "admin"},
            {"is_active": False},
            {"email": "x@example.com"},
            {"full_name": None},
            {"password": None},
        ],
    )
    async def test_cannot_change_role_activity_or_email_or_send_null(
        self, api: Any, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        await api.register()
        response = await client.patch("/v1/users/me", json=body, headers=await api.headers())
        assert_problem(response, 422)

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        response = assert_problem(await client.get("/v1/users/me"), 401)
        assert "bearer" in response["detail"].lower()


class TestAdministration:
    async def test_admin_lists_and_reads_users(self, api: Any, client: httpx.AsyncClient) -> None:
        user = await api.register()
        admin = await api.admin_headers()
        page = (await client.get("/v1/users?limit=1&offset=1", headers=admin)).json()
        assert page["total"] == 2
        assert page["limit"] == 1
        assert page["offset"] == 1
        assert [u["id"] for u in page["items"]] == [user["id"]]
        assert (await client.get(f"/v1/users/{user['id']}", headers=admin)).json() == user

    async def test_admin_pages_by_cursor_oldest_first(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        admin = await api.admin_headers()
        users = [await api.register(email=f"user{n}@example.com") for n in range(2)]

        first = (await client.get("/v1/users?limit=2", headers=admin)).json()
        later = await api.register(email="later@example.com")  # newest: on the next page
        second = (
            await client.get(
                "/v1/users", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin
            )
        ).json()

        assert first["items"][1]["id"] == users[0]["id"]
        assert [u["id"] for u in second["items"]] == [users[1]["id"], later["id"]]
        assert (second["offset"], second["total"], "next_cursor" in second) == (2, 4, False)

    async def test_admin_promotes_and_deactivates(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        user = await api.register()
        admin = await api.admin_headers()
        response = await client.patch(
            f"/v1/users/{user['id']}", json={"role": "admin"}, headers=admin
        )
        assert response.json()["role"] == "admin"
        response = await client.patch(
            f"/v1/users/{user['id']}", json={"is_active": False}, headers=admin
        )
        assert response.json()["is_active"] is False

    async def test_customers_are_forbidden(self, api: Any, client: httpx.AsyncClient) -> None:
        user = await api.register()
        headers = await api.headers()
        assert_problem(await client.get("/v1/users", headers=headers), 403)
        assert_problem(await client.get(f"/v1/users/{user['id']}", headers=headers), 403)
        patch = await client.patch(
            f"/v1/users/{user['id']}", json={"role": "admin"}, headers=headers
        )
        assert_problem(patch, 403)

    async def test_admin_cannot_lock_themselves_out(
        self, client: httpx.AsyncClient, api: Any
    ) -> None:
        admin = await api.admin_headers()
        me = (await client.get("/v1/users/me", headers=admin)).json()
        response = await client.patch(
            f"/v1/users/{me['id']}", json={"is_active": False}, headers=admin
        )
        assert_problem(response, 409)

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/v1/users/not-a-uuid", 422),
            (f"/v1/users/{uuid.uuid4()}", 404),
            ("/v1/users?limit=100000", 422),
            ("/v1/users?limit=0", 422),
            ("/v1/users?offset=-1", 422),
        ],
    )
    async def test_bad_ids_and_pages(
        self, api: Any, client: httpx.AsyncClient, path: str, status: int
    ) -> None:
        assert_problem(await client.get(path, headers=await api.admin_headers()), status)


class TestDeactivation:
    async def test_deactivated_users_token_stops_working_and_login_fails(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        user = await api.register()
        headers = await api.headers()
        await client.patch(
            f"/v1/users/{user['id']}", json={"is_active": False}, headers=await api.admin_headers()
        )
        assert_problem(await client.get("/v1/users/me", headers=headers), 401)
        login = await client.post(
            "/v1/auth/token", data={"username": "ada@example.com", "password": "correct-horse"}
        )
        assert_problem(login, 401)

    async def test_internal_status_reports_it(self, api: Any, client: httpx.AsyncClient) -> None:
        user = await api.register()
        assert (await client.get(f"/internal/v1/users/{user['id']}/status")).json() == {
            "is_active": True,
            "role": "customer",
        }
        assert_problem(await client.get(f"/internal/v1/users/{uuid.uuid4()}/status"), 404)

    async def test_internal_status_needs_a_service_credential(
        self, api: Any, outsider: httpx.AsyncClient
    ) -> None:
        user = await api.register()
        path = f"/internal/v1/users/{user['id']}/status"
        assert_problem(await outsider.get(path), 401)
        # A user's access token, even an administrator's, is not a service's.
        assert_problem(await outsider.get(path, headers=await api.headers()), 401)
        assert_problem(await outsider.get(path, headers=await api.admin_headers()), 401)
        # Every other process checks tokens with it; user_service itself never calls it.
        assert_problem(
            await outsider.get(path, headers=service_headers("user_service", "user_service")), 403
        )
        for caller in SERVICE_NAMES:
            if caller != "user_service":
                response = await outsider.get(path, headers=service_headers(caller, "user_service"))
                assert response.status_code == 200, (caller, response.text)


def _claims(sub: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub,
        "role": "admin",
        "iss": "ecommerce-user-service",
        "aud": "ecommerce",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **overrides,
    }


class TestForgedTokens:
    """Every way of forging or stretching a token ends in a 401 problem, never a 500."""

    async def _me(self, client: httpx.AsyncClient, token: str) -> httpx.Response:
        return await client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})

    async def _user_id(self, api: Any) -> str:
        user: dict[str, Any] = await api.register()
        return str(user["id"])

    async def test_alg_none(self, api: Any, client: httpx.AsyncClient, app: FastAPI) -> None:
        sub = await self._user_id(api)
        token = jwt.encode(
            _claims(sub), key=None, algorithm="none", headers={"kid": app.state.key_ring.kid}
        )
        assert_problem(await self._me(client, token), 401)

    async def test_hs256_signed_with_the_public_key(
        self, api: Any, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        sub = await self._user_id(api)
        public_pem = app.state.key_ring.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": app.state.key_ring.kid}
        # PyJWT refuses to HMAC with a PEM key, which is the attack: sign by hand.
        import base64
        import hashlib
        import hmac
        import json

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = (
            f"{b64(json.dumps(header).encode())}.{b64(json.dumps(_claims(sub)).encode())}"
        )
        signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        assert_problem(await self._me(client, f"{signing_input}.{b64(signature)}"), 401)

    async def test_signed_by_another_key_with_our_kid(
        self, api: Any, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        sub = await self._user_id(api)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(
            _claims(sub), other, algorithm="RS256", headers={"kid": app.state.key_ring.kid}
        )
        assert_problem(await self._me(client, token), 401)

    async def test_unknown_kid(self, api: Any, client: httpx.AsyncClient) -> None:
        sub = await self._user_id(api)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(_claims(sub), other, algorithm="RS256", headers={"kid": "someone-else"})
        assert_problem(await self._me(client, token), 401)

    @pytest.mark.parametrize(
        "overrides",
        [
            {"exp": int(time.time()) - 3600},
            {"aud": "another-audience"},
            {"iss": "someone-else"},
            {"sub": "not-a-uuid"},
        ],
    )
    async def test_bad_claims(
        self, api: Any, client: httpx.AsyncClient, app: FastAPI, overrides: dict[str, Any]
    ) -> None:
        claims = {**_claims(await self._user_id(api)), **overrides}
        token = app.state.key_ring.sign(claims)
        assert_problem(await self._me(client, token), 401)

    async def test_missing_claims(self, api: Any, client: httpx.AsyncClient, app: FastAPI) -> None:
        sub = await self._user_id(api)
        claims = _claims(sub)
        del claims["jti"]
        assert_problem(await self._me(client, app.state.key_ring.sign(claims)), 401)

    @pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 100_000, ""])
    async def test_garbage(self, client: httpx.AsyncClient, token: str) -> None:
        assert_problem(await self._me(client, token), 401)

    async def test_token_role_is_not_trusted_over_the_account(
        self, api: Any, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        sub = await self._user_id(api)
        # A validly signed token claiming admin for a customer (say, demoted since):
        # the account's current role decides.
        token = app.state.key_ring.sign(_claims(sub, role="admin"))
        assert_problem(
            await client.get("/v1/users", headers={"Authorization": f"Bearer {token}"}), 403
        )
