"""Settings of the user service."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr

from shared.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "user_service"

    # The first administrator, created at start-up when missing.
    admin_email: str | None = None
    admin_password: SecretStr | None = None

    # Signing keys. In production the private key comes from configuration (PEM text or a
    # mounted file); in development one is generated into DATA_DIR/jwt on first run.
    jwt_algorithm: Literal["RS256", "EdDSA"] = "RS256"
    jwt_private_key: SecretStr | None = None
    jwt_private_key_file: str | None = None
    #: PEM public keys of retired signing keys, still published so their tokens verify.
    jwt_previous_public_keys: str = ""
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=14 * 86_400, ge=300)

    # Login throttling (see throttle.py): failed logins allowed per account, from any
    # address, and per address, against any account, within the window; then 429.
    login_failures_per_account: int = Field(default=10, ge=1)
    login_failures_per_address: int = Field(default=50, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    #: Counters shared by every replica; in-process memory without it (one replica).
    redis_url: str = ""

    def production_secrets(self) -> tuple[str, ...]:
        return ("admin_password",)

    def has_configured_key(self) -> bool:
        return bool(self.jwt_private_key or self.jwt_private_key_file)


@lru_cache
def get_settings() -> Settings:
    return Settings()
