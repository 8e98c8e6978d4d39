"""The user service's app: create_app() and its lifespan, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from eventbus import add_events
from shared.auth import TokenVerifier
from shared.db import Database
from shared.service import ServiceBuilder
from user_service.api import auth, internal, users
from user_service.config import Settings, get_settings
from user_service.keys import load_key_ring
from user_service.passwords import PasswordHasher
from user_service.service import AccountService, DatabaseUserStatus
from user_service.throttle import LoginThrottle


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key_ring = await asyncio.to_thread(load_key_ring, settings)
        hasher = await asyncio.to_thread(PasswordHasher)
        database: Database = app.state.database
        app.state.key_ring = key_ring
        app.state.password_hasher = hasher
        app.state.login_throttle = throttle = LoginThrottle.from_settings(settings)
        if settings.admin_email and settings.admin_password:
            async with database.sessionmaker() as session:
                await AccountService(session, hasher).ensure_admin(
                    settings.admin_email, settings.admin_password.get_secret_value()
                )
        try:
            yield
        finally:
            await throttle.aclose()

    def local_verifier(app: FastAPI) -> TokenVerifier:
        """Tokens are verified here with our own keys: no JWKS round trip to ourselves."""
        return TokenVerifier(
            app.state.key_ring,
            DatabaseUserStatus(app.state.database),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    service = ServiceBuilder(
        settings,
        title="User service",
        description="Accounts, argon2 passwords, access and refresh tokens, and the JWKS.",
    )
    service.add_service_defaults()
    service.add_database()
    add_events(service, publishes=True)
    service.add_lifespan(lifespan)
    service.add_auth(local_verifier)
    service.add_routers(auth.router, users.router, internal.router)
    return service.build()
