"""Registration, login, refresh rotation and the JWKS, through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from service_testing import assert_problem


class TestRegister:
    async def test_creates_a_customer_without_exposing_the_hash(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/v1/auth/register",
            json={"email": "Ada@Example.com", "password": "correct-horse", "full_name": "Ada"},
        )
        assert response.status_code == 201
        user = response.json()
        assert set(user) == {"id", "email", "full_name", "role", "is_active", "created_at"}
        assert user["email"] == "ada@example.com"
        assert user["role"] == "customer"
        assert user["is_active"] is True
        assert user["created_at"].endswith(("Z", "+00:00"))

    async def test_email_taken_is_409_whatever_the_case(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        await api.register("ada@example.com")
        response = await client.post(
            "/v1/auth/register",
            json={"email": "ADA@example.com", "password": "another-pass", "full_name": "Ada"},
        )
        assert_problem(response, 409)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "not-an-email", "password": "correct-horse", "full_name": "A"}, "email"),
            ({"email": "a@example.com", "password": "short", "full_name": "A"}, "password"),
            ({"email": "a@example.com", "password": "x" * 129, "full_name": "A"}, "password"),
            ({"email": "a@example.com", "password": "correct-horse", "full_name": ""}, "full_name"),
            (
                {"email": "a@example.com", "password": "correct-horse", "full_name": "A\x00B"},
                "full_name",
            ),
            ({"email": "a@example.com", "password": 12345678, "full_name": "A"}, "password"),
            ({"email": "a@example.com", "password": "correct-horse"}, "full_name"),
            (
                {
                    "email": "a@example.com",
                    "password": "correct-horse",
                    "full_name": "A",
                    "role": "admin",
                },
                "role",
            ),
        ],
    )
    async def test_bad_input_is_422_naming_the_field(
        self, client: httpx.AsyncClient, body: dict[str, Any], field: str
    ) -> None:
        problem = assert_problem(await client.post("/v1/auth/register", json=body), 422)
        assert any(error["loc"][-1] == field for error in problem["errors"])
        assert "correct-horse" not in str(problem)

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/auth/register",
            content=b'{"email": "a@example.com",',
            headers={"content-type": "application/json"},
        )
        problem = assert_problem(response, 422)
        assert "JSON" in problem["detail"]

    async def test_a_hostile_body_gets_a_small_answer(self, client: httpx.AsyncClient) -> None:
        # 60,000 unknown fields (about 800 KB, under the body limit), one with a huge name.
        body: dict[str, Any] = {f"f{n:05}": 0 for n in range(60_000)}
        body["y" * 10_000] = 0
        body.update(email="a@example.com", password="correct-horse", full_name="A")
        response = await client.post("/v1/auth/register", json=body)
        problem = assert_problem(response, 422)
        assert len(problem["errors"]) == 20
        assert problem["errors"][0]["loc"] == ["body", "f00000"]
        assert problem["errors_total"] == 60_001
        assert len(response.content) < 8 * 1024
        assert all(len(str(part)) <= 100 for e in problem["errors"] for part in e["loc"])

    async def test_body_over_one_mebibyte_is_413(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/auth/register",
            content=b"x" * (1024 * 1024 + 1),
            headers={"content-type": "application/json"},
        )
        assert_problem(response, 413)

    async def test_chunked_body_over_the_limit_is_413(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> Any:
            for _ in range(20):
                yield b"x" * 65536

        response = await client.post(
            "/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_problem(response, 413)


class TestToken:
    async def test_issues_a_signed_access_token_and_a_refresh_token(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        user = await api.register()
        tokens = await api.login()
        assert tokens["token_type"] == "bearer"
        assert tokens["expires_in"] == 900
        assert tokens["refresh_token"]
        jwks = (await client.get("/v1/auth/jwks")).json()
        header = jwt.get_unverified_header(tokens["access_token"])
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        assert header["alg"] == key["alg"] == "RS256"
        claims = jwt.decode(
            tokens["access_token"],
            jwt.PyJWK.from_dict(key).key,
            algorithms=["RS256"],
            audience="ecommerce",
            issuer="ecommerce-user-service",
        )
        assert claims["sub"] == user["id"]
        assert claims["role"] == "customer"
        assert {"iat", "exp", "jti"} <= set(claims)

    @pytest.mark.parametrize(
        ("username", "password"),
        [("ada@example.com", "wrong-password"), ("nobody@example.com", "correct-horse")],
    )
    async def test_wrong_credentials_are_401_with_the_same_answer(
        self, api: Any, client: httpx.AsyncClient, username: str, password: str
    ) -> None:
        await api.register()
        response = await client.post(
            "/v1/auth/token", data={"username": username, "password": password}
        )
        problem = assert_problem(response, 401)
        assert problem["detail"] == "Incorrect e-mail or password."
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_login_ignores_the_case_of_the_email(self, api: Any) -> None:
        await api.register()
        assert (await api.login("ADA@EXAMPLE.COM"))["access_token"]

    async def test_missing_form_fields_are_422(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post("/v1/auth/token", data={"username": "a@example.com"}), 422)


class TestRefresh:
    async def test_rotates_the_pair(self, api: Any, client: httpx.AsyncClient) -> None:
        await api.register()
        first = await api.login()
        response = await client.post(
            "/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert response.status_code == 200
        second = response.json()
        assert second["refresh_token"] != first["refresh_token"]
        me = await client.get(
            "/v1/users/me", headers={"Authorization": f"Bearer {second['access_token']}"}
        )
        assert me.status_code == 200

    async def test_reuse_is_401_and_ends_the_whole_family(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        await api.register()
        first = await api.login()
        second = (
            await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        ).json()
        reuse = await client.post(
            "/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert_problem(reuse, 401)
        # The thief's reuse also ends the legitimate holder's newer token.
        after = await client.post(
            "/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
        )
        assert_problem(after, 401)

    async def test_unknown_token_is_401(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post("/v1/auth/refresh", json={"refresh_token": "nope"}), 401)

    async def test_deactivated_user_cannot_refresh(
        self, api: Any, client: httpx.AsyncClient
    ) -> None:
        user = await api.register()
        tokens = await api.login()
        admin = await api.admin_headers()
        await client.patch(f"/v1/users/{user['id']}", json={"is_active": False}, headers=admin)
        response = await client.post(
            "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_problem(response, 401)


class TestJwks:
    async def test_publishes_the_signing_key_without_private_parts(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/v1/auth/jwks")
        assert response.status_code == 200
        (key,) = response.json()["keys"]
        assert key["kty"] == "RSA"
        assert key["use"] == "sig"
        assert key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
