"""Settings read from the environment."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from api_gateway.config import SERVICE_NAMES, Settings
from service_testing import production_credentials


class TestSettings:
    def test_defaults(self, monkeypatch) -> None:
        for name in ("TRUSTED_PROXIES", "HEALTH_SERVICES", "RATE_LIMIT_PER_MINUTE"):
            monkeypatch.delenv(name, raising=False)
        settings = Settings(_env_file=None)
        assert settings.service_name == "api_gateway"
        assert settings.max_body_bytes == 1024 * 1024
        assert settings.rate_limit_per_minute > 0
        assert settings.health_services == SERVICE_NAMES
        assert settings.trusted_proxies == (ip_network("127.0.0.1/32"), ip_network("::1/128"))

    def test_lists_from_the_environment(self, monkeypatch) -> None:
        monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.5")
        monkeypatch.setenv("HEALTH_SERVICES", "user_service,product_service")
        monkeypatch.setenv("GATEWAY_HTTP_TRANSPORT", "httpx")
        settings = Settings(_env_file=None)
        assert settings.trusted_proxies == (ip_network("10.0.0.0/8"), ip_network("192.168.1.5"))
        assert settings.health_services == ("user_service", "product_service")
        assert settings.http_transport == "httpx"

    def test_unknown_service_is_refused(self, monkeypatch) -> None:
        monkeypatch.setenv("HEALTH_SERVICES", "user_service,payment_service")
        with pytest.raises(ValidationError, match="payment_service"):
            Settings(_env_file=None)

    def test_production_needs_no_database(self, monkeypatch) -> None:
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.delenv("DATABASE_URL", raising=False)
        for name, value in production_credentials("api_gateway").items():
            monkeypatch.setenv(name.upper(), value)
        assert Settings(_env_file=None).is_production
