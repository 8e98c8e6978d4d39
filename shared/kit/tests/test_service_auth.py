"""Service credentials: an `/internal` route answers only the services it names, with a
token signed by the caller's own key, addressed to this service and still fresh."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from fastapi import APIRouter, FastAPI, Request
from pydantic import ValidationError

from service_testing import (
    LocalTokens,
    assert_problem,
    production_credentials,
    running_app,
    serve,
    service_headers,
)
from shared import service_auth
from shared.config import ServiceSettings
from shared.errors import Unauthorized
from shared.http import ServiceClient
from shared.service import ServiceBuilder
from shared.service_auth import (
    SERVICE_NAMES,
    ServiceIdentity,
    ServiceKeys,
    check_production_keys,
    development_key,
    public_pem,
    require_service,
)

STATUS = "/internal/v1/things/1"


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def inventory_app(**settings: Any) -> FastAPI:
    """A service with one internal route that order_service alone may call."""
    router = APIRouter(prefix="/internal/v1", dependencies=[require_service("order_service")])

    @router.get("/things/{thing_id}")
    async def read_thing(thing_id: int, request: Request) -> dict[str, Any]:
        return {"id": thing_id, "caller": request.state.service_caller}

    @router.post("/things")
    async def create_thing(body: dict[str, int]) -> dict[str, int]:
        return body

    public = APIRouter()

    @public.get("/v1/things")
    async def list_things() -> list[int]:
        return [1]

    service = ServiceBuilder(
        ServiceSettings(_env_file=None, service_name="inventory_service", **settings),
        title="Inventory",
    )
    service.add_routers(router, public)
    return service.build()


@pytest.fixture
async def inventory() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=inventory_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://inventory") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(caller: str, key: Ed25519PrivateKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": service_auth.ISSUER,
        "sub": caller,
        "aud": "inventory_service",
        "iat": now,
        "exp": now + 60,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": f"service:{caller}"})


class TestAuthentication:
    async def test_the_caller_named_by_the_route_is_served(
        self, inventory: httpx.AsyncClient
    ) -> None:
        response = await inventory.get(
            STATUS, headers=service_headers("order_service", "inventory_service")
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"id": 1, "caller": "order_service"}

    @pytest.mark.parametrize(
        "authorization",
        [
            None,
            "",
            "Bearer",
            "Basic b3JkZXI6c2VydmljZQ==",
            "Bearer not-a-jwt",
            "Bearer " + "a" * 5000,
        ],
    )
    async def test_no_usable_credential_is_401(
        self, inventory: httpx.AsyncClient, authorization: str | None
    ) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        problem = assert_problem(await inventory.get(STATUS, headers=headers), 401)
        assert problem["request_id"]

    async def test_a_users_token_is_401_even_an_administrators(
        self, inventory: httpx.AsyncClient
    ) -> None:
        tokens = LocalTokens()
        for role in ("customer", "admin"):
            assert_problem(await inventory.get(STATUS, headers=tokens.headers(role=role)), 401)

    @pytest.mark.parametrize(
        "token",
        [
            # order_service's name, signed with a key nobody configured.
            pytest.param(
                lambda: signed("order_service", Ed25519PrivateKey.generate()), id="forged"
            ),
            # Signed by notification_service's key, claiming to be order_service.
            pytest.param(
                lambda: jwt.encode(
                    {
                        "iss": service_auth.ISSUER,
                        "sub": "order_service",
                        "aud": "inventory_service",
                        "iat": int(time.time()),
                        "exp": int(time.time()) + 60,
                    },
                    development_key("notification_service"),
                    algorithm="EdDSA",
                    headers={"kid": "service:notification_service"},
                ),
                id="other-subject",
            ),
            pytest.param(
                lambda: signed(
                    "order_service", development_key("order_service"), aud="user_service"
                ),
                id="other-audience",
            ),
            pytest.param(
                lambda: signed(
                    "order_service",
                    development_key("order_service"),
                    iat=int(time.time()) - 200,
                    exp=int(time.time()) - 100,
                ),
                id="expired",
            ),
            pytest.param(
                lambda: signed("order_service", development_key("order_service"), iss="someone"),
                id="other-issuer",
            ),
            pytest.param(
                lambda: signed("payment_service", development_key("payment_service")),
                id="unknown-service",
            ),
            pytest.param(
                lambda: jwt.encode(
                    {"sub": "order_service", "aud": "inventory_service"},
                    "a-secret-anyone-could-guess-32-bytes",
                    algorithm="HS256",
                    headers={"kid": "service:order_service"},
                ),
                id="hs256",
            ),
        ],
    )
    async def test_a_credential_that_does_not_verify_is_401(
        self, inventory: httpx.AsyncClient, token: Any
    ) -> None:
        assert_problem(await inventory.get(STATUS, headers=bearer(token())), 401)

    async def test_an_unknown_internal_path_is_401_not_404(
        self, inventory: httpx.AsyncClient
    ) -> None:
        assert_problem(await inventory.get("/internal/v1/nothing-here"), 401)

    async def test_the_body_is_not_read_before_the_credential(
        self, inventory: httpx.AsyncClient
    ) -> None:
        response = await inventory.post("/internal/v1/things", content=b"{not json")
        assert_problem(response, 401)

    async def test_public_routes_need_no_service_credential(
        self, inventory: httpx.AsyncClient
    ) -> None:
        assert (await inventory.get("/v1/things")).status_code == 200


class TestAuthorization:
    @pytest.mark.parametrize("caller", [n for n in SERVICE_NAMES if n != "order_service"])
    async def test_another_services_credential_is_403(
        self, inventory: httpx.AsyncClient, caller: str
    ) -> None:
        response = await inventory.get(STATUS, headers=service_headers(caller, "inventory_service"))
        problem = assert_problem(response, 403)
        assert caller in problem["detail"]

    def test_a_route_names_known_services_only(self) -> None:
        with pytest.raises(ValueError, match="payment_service"):
            require_service("order_service", "payment_service")


class TestConfiguredKeys:
    async def test_configured_keys_replace_the_development_ones(self) -> None:
        order_key = Ed25519PrivateKey.generate()
        app = inventory_app(
            service_public_keys=json.dumps({"order_service": public_pem(order_key)})
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://inventory") as client:
            # The development key anyone can derive no longer speaks for order_service.
            development = service_headers("order_service", "inventory_service")
            assert_problem(await client.get(STATUS, headers=development), 401)
            identity = ServiceIdentity("order_service", order_key)
            response = await client.get(
                STATUS, headers={"Authorization": identity.authorization("inventory_service")}
            )
            assert response.status_code == 200, response.text

    async def test_while_a_key_rotates_both_are_accepted(self) -> None:
        old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        document = json.dumps({"order_service": [public_pem(old), public_pem(new)]})
        transport = httpx.ASGITransport(app=inventory_app(service_public_keys=document))
        async with httpx.AsyncClient(transport=transport, base_url="http://inventory") as client:
            for key in (old, new):
                identity = ServiceIdentity("order_service", key)
                headers = {"Authorization": identity.authorization("inventory_service")}
                assert (await client.get(STATUS, headers=headers)).status_code == 200
            stranger = ServiceIdentity("order_service", Ed25519PrivateKey.generate())
            headers = {"Authorization": stranger.authorization("inventory_service")}
            assert_problem(await client.get(STATUS, headers=headers), 401)

    def test_a_configured_private_key_signs(self) -> None:
        key = Ed25519PrivateKey.generate()
        settings = ServiceSettings(
            _env_file=None, service_name="order_service", service_private_key=private_pem(key)
        )
        token = ServiceIdentity.from_settings(settings).token("inventory_service")
        claims = jwt.decode(
            token, key.public_key(), algorithms=["EdDSA"], audience="inventory_service"
        )
        assert claims["sub"] == "order_service"

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ("not json", "JSON object"),
            ('["a"]', "JSON object"),
            ('{"payment_service": "x"}', "unknown service"),
            ('{"order_service": "not a key"}', "not a PEM public key"),
            ('{"order_service": []}', "empty"),
        ],
    )
    def test_unreadable_public_keys_stop_the_service(self, document: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            inventory_app(service_public_keys=document)


class TestProduction:
    BASE: ClassVar[dict[str, Any]] = {
        "environment": "production",
        "service_name": "order_service",
        "database_url": "postgresql+asyncpg://orders:real-password@db/orders",
        "rabbitmq_url": "amqps://order_service:real-password@mq/",
    }

    def test_real_credentials_start(self) -> None:
        settings = ServiceSettings(
            _env_file=None, **self.BASE, **production_credentials("order_service")
        )
        assert settings.is_production

    def test_without_credentials_it_refuses_to_start(self) -> None:
        with pytest.raises(ValidationError, match="SERVICE_PRIVATE_KEY"):
            ServiceSettings(_env_file=None, **self.BASE)

    def test_a_development_key_is_refused(self) -> None:
        credentials = production_credentials("order_service")
        development = private_pem(development_key("order_service"))
        with pytest.raises(ValidationError, match="development key"):
            ServiceSettings(
                _env_file=None,
                **self.BASE,
                **{**credentials, "service_private_key": development},
            )

    def test_every_public_key_is_needed_and_none_a_development_one(self) -> None:
        private = private_pem(Ed25519PrivateKey.generate())
        keys = {name: public_pem(Ed25519PrivateKey.generate()) for name in SERVICE_NAMES}
        with pytest.raises(ValueError, match="missing api_gateway"):
            check_production_keys(
                "order_service",
                private,
                json.dumps({k: v for k, v in keys.items() if k != "api_gateway"}),
            )
        keys["user_service"] = public_pem(development_key("user_service"))
        with pytest.raises(ValueError, match="development keys for user_service"):
            check_production_keys("order_service", private, json.dumps(keys))

    def test_a_key_of_another_kind_is_refused(self) -> None:
        rsa = generate_private_key(public_exponent=65537, key_size=2048)
        pem = rsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        with pytest.raises(ValueError, match="Ed25519"):
            check_production_keys("order_service", pem, "{}")


class TestServiceClient:
    async def test_internal_calls_carry_the_credential_others_do_not(self) -> None:
        seen: list[httpx.Request] = []

        async def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={})

        client = ServiceClient(
            {"inventory": "http://inventory"},
            custom_transport=httpx.MockTransport(record),
            identity=ServiceIdentity("order_service", development_key("order_service")),
        )
        try:
            await client.request("inventory", "GET", "/internal/v1/stock", params={"ids": "1"})
            await client.request("inventory", "GET", "/v1/inventory/1")
            # `send` relays a request as it was built (the gateway's proxy): never signed.
            await client.send("inventory", httpx.Request("GET", "http://inventory/internal/x"))
        finally:
            await client.aclose()
        signed_call, public_call, relayed = seen
        token = signed_call.headers["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(
            token,
            development_key("order_service").public_key(),
            algorithms=["EdDSA"],
            audience="inventory_service",
        )
        assert claims["sub"] == "order_service"
        assert "authorization" not in public_call.headers
        assert "authorization" not in relayed.headers

    async def test_a_served_app_calls_another_with_its_own_credential(self) -> None:
        """ServiceBuilder gives the process's client its identity: order_service's
        client reaches inventory's internal route, product_service's is refused."""
        async with serve(inventory_app()) as inventory_url:
            for caller, expected in (("order_service", 200), ("product_service", 403)):
                service = ServiceBuilder(
                    ServiceSettings(_env_file=None, service_name=caller), title=caller
                )
                service.add_http_client({"inventory": inventory_url})
                async with running_app(service.build()) as app:
                    client: ServiceClient = app.state.http_client
                    response = await client.request("inventory", "GET", STATUS)
                    assert response.status_code == expected, response.text


class TestVerifiedTokens:
    def test_a_token_verified_once_is_not_verified_again_until_it_expires(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [time.time()]
        monkeypatch.setattr(service_auth.time, "time", lambda: now[0])
        keys = ServiceKeys(
            "inventory_service",
            {name: (development_key(name).public_key(),) for name in SERVICE_NAMES},
        )
        verified = []
        verify = keys._verified
        monkeypatch.setattr(keys, "_verified", lambda *a: verified.append(1) or verify(*a))
        identity = ServiceIdentity("order_service", development_key("order_service"))
        authorization = identity.authorization("inventory_service")
        assert keys.caller(authorization) == "order_service"
        assert keys.caller(authorization) == "order_service"
        assert len(verified) == 1
        now[0] += service_auth.TOKEN_SECONDS + service_auth.CLOCK_SKEW_SECONDS + 1
        keys.caller(authorization)  # (PyJWT reads the real clock: still valid to it)
        assert len(verified) == 2

    def test_a_token_that_differs_by_one_character_is_verified_anew(self) -> None:
        keys = ServiceKeys(
            "inventory_service",
            {name: (development_key(name).public_key(),) for name in SERVICE_NAMES},
        )
        token = ServiceIdentity("order_service", development_key("order_service")).token(
            "inventory_service"
        )
        assert keys.caller(f"Bearer {token}") == "order_service"
        tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        with pytest.raises(Unauthorized):
            keys.caller(f"Bearer {tampered}")


class TestIdentity:
    def test_a_token_is_reused_then_renewed_before_it_expires(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [1_000_000.0]
        monkeypatch.setattr(service_auth.time, "time", lambda: now[0])
        identity = ServiceIdentity("order_service", development_key("order_service"))
        first = identity.token("inventory_service")
        now[0] += service_auth.TOKEN_SECONDS - service_auth.RENEW_BEFORE_SECONDS - 1
        assert identity.token("inventory_service") == first
        assert identity.token("product_service") != first  # one per audience
        now[0] += 2
        renewed = identity.token("inventory_service")
        assert renewed != first
        claims = jwt.decode(
            renewed,
            development_key("order_service").public_key(),
            algorithms=["EdDSA"],
            audience="inventory_service",
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["exp"] == int(now[0]) + service_auth.TOKEN_SECONDS


def test_new_keys_pass_productions_check(tmp_path: Path) -> None:
    service_auth.write_new_keys(tmp_path / "keys")
    public = (tmp_path / "keys" / "public-keys.json").read_text()
    for name in SERVICE_NAMES:
        private = tmp_path / "keys" / f"{name}.pem"
        assert private.stat().st_mode & 0o077 == 0
        check_production_keys(name, private.read_text(), public)
