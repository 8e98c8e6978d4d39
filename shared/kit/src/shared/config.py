"""Settings every service shares; each service subclasses `ServiceSettings`."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.service_auth import check_production_keys

#: Secrets that only exist so a fresh clone runs; production refuses them.
DEVELOPMENT_SECRETS = frozenset({"changeme", "change-me", "admin12345", "dev-secret", ""})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ServiceSettings(BaseSettings):
    """Configuration read from the environment and an optional `.env` file."""

    #: False for a process without a database (the gateway): production then needs no
    #: PostgreSQL URL.
    requires_database: ClassVar[bool] = True

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    service_name: str = "service"
    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    #: `json` (one object per line, for collectors: the default everywhere), `console`
    #: (short coloured lines for a person), or `auto`: console on a terminal, else JSON
    #: (`make run` sets it).
    log_format: Literal["json", "console", "auto"] = "json"
    data_dir: str = ".data"
    database_url: str = ""
    # The pool opens up to pool_size + max_overflow connections as the load needs them
    # and keeps each for the next transaction (opening one is slow: a login, often a TLS
    # handshake); the sum is what a process may hold at most (README, Connection budget).
    database_pool_size: int = Field(default=20, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    database_echo: bool = False

    # Token verification (every service checks access tokens against the JWKS).
    user_service_url: str = "http://127.0.0.1:8001"
    jwt_issuer: str = "ecommerce-user-service"
    jwt_audience: str = "ecommerce"
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    user_status_cache_seconds: float = Field(default=5.0, ge=0)

    # Outgoing HTTP calls to other services.
    http_connect_timeout: float = Field(default=1.0, gt=0)
    http_read_timeout: float = Field(default=5.0, gt=0)
    http_pool_timeout: float = Field(default=1.0, gt=0)
    http_max_connections: int = Field(default=200, ge=1)
    http_max_keepalive: int = Field(default=100, ge=1)
    http_retries: int = Field(default=2, ge=0)
    #: aiohttp's pool: httpx's own serialises concurrent calls (at 32 at once, 2 ms of
    #: CPU per call against 0.27 ms; README, Benchmarks).
    http_transport: Literal["httpx", "aiohttp"] = "aiohttp"
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=10.0, gt=0)
    #: Longest a request served here may take, its calls to other services included; a
    #: caller's shorter `X-Request-Budget-Ms` shortens it (shared.deadline).
    request_budget_seconds: float = Field(default=10.0, gt=0)

    # Service credentials on /internal routes (shared.service_auth): this service's own
    # Ed25519 private key (PEM), and every service's public key as a JSON object
    # {"order_service": "-----BEGIN PUBLIC KEY-----...", ...}. Unset: development keys
    # derived from the names, which production refuses.
    service_private_key: SecretStr | None = None
    service_public_keys: str = ""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1)

    # Events over RabbitMQ (eventbus): the broker, the outbox relay of a producing
    # process and the consumer of a consuming one.
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    #: The topic exchange every event goes through. Queues are `<prefix><service>.events`;
    #: the prefix (and another exchange) keep test runs apart on a shared broker.
    events_exchange: str = Field(default="ecommerce.events", min_length=1, max_length=200)
    events_queue_prefix: str = Field(default="", max_length=100)
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    #: How long the relay, woken by a commit with no batch out, waits for the next
    #: commits' events to join the batch: fewer passes when events come a few at a time
    #: (an order stages two, milliseconds apart), for at most this much more lag.
    outbox_linger_seconds: float = Field(default=0.01, ge=0, le=1.0)
    outbox_publish_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Longest wait between two tries, for the broker as a whole and for one event.
    outbox_retry_max_seconds: float = Field(default=60.0, gt=0)
    outbox_retention_hours: float = Field(default=168.0, gt=0)
    #: Messages a consumer holds at once; it handles `events_prefetch // events_batch_size`
    #: batches at a time, each in one transaction.
    events_prefetch: int = Field(default=64, ge=1, le=10_000)
    events_batch_size: int = Field(default=32, ge=1, le=1_000)
    #: How long a batch stays open after its first event for others to join it: fewer
    #: transactions under load, for at most this much more lag.
    events_linger_seconds: float = Field(default=0.02, ge=0, le=1.0)
    #: Pause before a failed event is handed back for another try (doubles each try).
    events_retry_delay_seconds: float = Field(default=0.5, ge=0)
    inbox_retention_days: float = Field(default=30.0, gt=0)

    # Telemetry (shared.tracing). Traces are exported by OTLP/HTTP when the endpoint is
    # set (e.g. http://otel-collector:4318); without it no span is made at all.
    otel_exporter_otlp_endpoint: str = ""
    #: Share of new traces kept (0..1); a request that arrives with a sampled
    #: `traceparent` is always traced, so one trace is never cut in half.
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0.0, le=1.0)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    def effective_database_url(self) -> str:
        """`DATABASE_URL`, or a SQLite file named after the service in the data directory."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir}/{self.service_name}.db"

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Self:
        if self.is_production:
            for name in self.production_secrets():
                value = getattr(self, name)
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                if value is None or str(value).strip().lower() in DEVELOPMENT_SECRETS:
                    raise ValueError(
                        f"{name.upper()} must be set to a real secret when ENVIRONMENT=production"
                    )
            if self.requires_database and (
                not self.database_url or self.database_url.startswith("sqlite")
            ):
                raise ValueError(
                    "DATABASE_URL must point at PostgreSQL when ENVIRONMENT=production"
                )
            # Only processes with a database have an outbox or an inbox, so only they
            # talk to the broker.
            if self.requires_database and _has_guest_login(self.rabbitmq_url):
                raise ValueError(
                    "RABBITMQ_URL must not log in as guest/guest when ENVIRONMENT=production"
                )
            private_key = self.service_private_key
            check_production_keys(
                self.service_name,
                None if private_key is None else private_key.get_secret_value(),
                self.service_public_keys,
            )
        return self

    def production_secrets(self) -> tuple[str, ...]:
        """Names of fields that must not keep a development default in production."""
        return ()


def _has_guest_login(url: SecretStr) -> bool:
    parsed = urlsplit(url.get_secret_value())
    return (parsed.username or "guest") == "guest" and (parsed.password or "guest") == "guest"
