"""Settings of the notification service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from shared.config import ServiceSettings


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


@lru_cache
def get_settings() -> Settings:
    return Settings()
