"""Signing keys: generated once in development, required in production, rotated gracefully."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from service_testing import production_credentials
from shared.auth import TokenVerifier, UserStatus
from user_service.config import Settings
from user_service.keys import (
    KeyConfigurationError,
    generate_private_key,
    load_key_ring,
    private_pem,
    public_pem,
    rotate_development_key,
)


def dev_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, data_dir=str(tmp_path), **overrides)  # type: ignore[arg-type]


class ActiveUsers:
    async def get_status(self, user_id: uuid.UUID) -> UserStatus:
        return UserStatus(is_active=True, role="customer")


def claims() -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": str(uuid.uuid4()),
        "iss": "ecommerce-user-service",
        "aud": "ecommerce",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }


class TestDevelopmentKeys:
    def test_generated_once_and_reused(self, tmp_path: Path) -> None:
        first = load_key_ring(dev_settings(tmp_path))
        second = load_key_ring(dev_settings(tmp_path))
        assert first.kid == second.kid
        assert (tmp_path / "jwt" / "signing-key.pem").stat().st_mode & 0o777 == 0o600

    async def test_rotation_keeps_old_tokens_valid(self, tmp_path: Path) -> None:
        settings = dev_settings(tmp_path)
        old = load_key_ring(settings)
        old_token = old.sign(claims())
        new = rotate_development_key(settings)
        assert new.kid != old.kid
        assert {k["kid"] for k in new.jwks["keys"]} == {old.kid, new.kid}
        verifier = TokenVerifier(
            new, ActiveUsers(), issuer="ecommerce-user-service", audience="ecommerce"
        )
        await verifier.verify(old_token)
        await verifier.verify(new.sign(claims()))

    def test_eddsa(self, tmp_path: Path) -> None:
        ring = load_key_ring(dev_settings(tmp_path, jwt_algorithm="EdDSA"))
        assert ring.jwks["keys"][0]["kty"] == "OKP"
        token = ring.sign(claims())
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


class TestConfiguredKeys:
    def test_pem_from_configuration_with_retired_keys(self, tmp_path: Path) -> None:
        current = generate_private_key("RS256")
        retired = generate_private_key("RS256")
        ring = load_key_ring(
            dev_settings(
                tmp_path,
                jwt_private_key=private_pem(current).decode(),
                jwt_previous_public_keys=public_pem(retired.public_key()).decode(),
            )
        )
        assert len(ring.jwks["keys"]) == 2
        assert not (tmp_path / "jwt").exists()
        with pytest.raises(KeyConfigurationError):
            rotate_development_key(
                dev_settings(tmp_path, jwt_private_key=private_pem(current).decode())
            )


class TestProductionSettings:
    def test_refuses_development_admin_password(self) -> None:
        with pytest.raises(ValidationError, match="ADMIN_PASSWORD"):
            Settings(
                _env_file=None,
                environment="production",
                database_url="postgresql+asyncpg://u:p@db/users",
                admin_password="changeme",
            )

    def test_refuses_sqlite(self) -> None:
        with pytest.raises(ValidationError, match="DATABASE_URL"):
            Settings(_env_file=None, environment="production", admin_password="a-real-secret-1")

    def test_refuses_the_guest_broker_login(self) -> None:
        with pytest.raises(ValidationError, match="RABBITMQ_URL"):
            Settings(
                _env_file=None,
                environment="production",
                database_url="postgresql+asyncpg://u:p@db/users",
                admin_password="a-real-secret-1",
            )

    def test_refuses_to_generate_a_key(self, tmp_path: Path) -> None:
        settings = Settings(
            _env_file=None,
            environment="production",
            database_url="postgresql+asyncpg://u:p@db/users",
            rabbitmq_url="amqp://users:a-real-secret-2@mq:5672/",
            admin_password="a-real-secret-1",
            data_dir=str(tmp_path),
            **production_credentials("user_service"),
        )
        with pytest.raises(KeyConfigurationError):
            load_key_ring(settings)
