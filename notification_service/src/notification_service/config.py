"""Settings of the notification service."""

from __future__ import annotations

from functools import lru_cache
from typing import Self

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, model_validator

from shared.config import ServiceSettings

#: Encrypts webhook secrets when `WEBHOOK_SECRET_KEYS` is unset: development and tests
#: only (production refuses to start without keys of its own).
DEVELOPMENT_WEBHOOK_KEY = "ZGV2ZWxvcG1lbnQtb25seS13ZWJob29rLXNlY3JldHM="


class Settings(ServiceSettings):
    service_name: str = "notification_service"

    #: The SMTP server that sends the e-mails; unset: notifications are recorded and
    #: logged, not sent (development, tests).
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = "E-Shop <no-reply@example.com>"
    #: STARTTLS on a plain connection (port 587); implicit TLS is port 465's.
    smtp_use_tls: bool = True
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Tries of one e-mail before it is stored `failed`, with a doubling pause between.
    smtp_attempts: int = Field(default=3, ge=1, le=10)
    smtp_retry_delay_seconds: float = Field(default=0.5, ge=0)

    # Webhooks (see README "Webhooks").
    #: Fernet keys (comma-separated, newest first) that encrypt the endpoints' signing
    #: secrets at rest: the first encrypts, all decrypt, so a key is rotated by putting
    #: a new one in front. Make one with
    #: `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
    webhook_secret_keys: SecretStr = SecretStr("")
    #: Refuse endpoints whose host resolves to a loopback, private, link-local or
    #: metadata address; unset: on in production only (development posts to localhost).
    webhook_block_private_addresses: bool | None = None
    #: A delivery attempt's whole budget: connecting, sending and the answer.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    #: Attempts in flight at once in one process, and to one endpoint from one process.
    webhook_concurrency: int = Field(default=64, ge=1, le=1000)
    webhook_endpoint_concurrency: int = Field(default=4, ge=1, le=100)
    #: Pause before the first retry; each later one doubles it, up to the maximum, with
    #: up to a fifth added or taken at random so that retries do not arrive in step.
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    #: How long a delivery keeps being retried before it is `failed` (at least 24 h in
    #: production, as the contract promises).
    webhook_retry_hours: float = Field(default=26.0, gt=0)
    #: How often the worker looks for due deliveries when nothing woke it earlier.
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    def production_secrets(self) -> tuple[str, ...]:
        return ("webhook_secret_keys",)

    @property
    def blocks_private_webhook_hosts(self) -> bool:
        if self.webhook_block_private_addresses is None:
            return self.is_production
        return self.webhook_block_private_addresses

    def webhook_keys(self) -> list[str]:
        keys = [key.strip() for key in self.webhook_secret_keys.get_secret_value().split(",")]
        return [key for key in keys if key] or [DEVELOPMENT_WEBHOOK_KEY]

    @model_validator(mode="after")
    def _check_webhook_settings(self) -> Self:
        for key in self.webhook_keys():
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(
                    "WEBHOOK_SECRET_KEYS must hold Fernet keys (32 url-safe base64 bytes)"
                ) from None
        if DEVELOPMENT_WEBHOOK_KEY in self.webhook_keys() and self.is_production:
            raise ValueError("WEBHOOK_SECRET_KEYS must not use the development key in production")
        if self.is_production and self.webhook_retry_hours < 24:
            raise ValueError("WEBHOOK_RETRY_HOURS must be at least 24 in production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
