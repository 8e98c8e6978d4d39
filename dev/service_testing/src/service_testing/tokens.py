"""Tokens signed the way the user service signs them, for testing a service on its own."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import TokenVerifier, UserStatus


class LocalTokens:
    """Signs tokens the way the user service does, for testing one service on its own.

    Stands in for the user service's JWKS and account status; the end-to-end suite
    covers the real thing."""

    def __init__(
        self, *, issuer: str = "ecommerce-user-service", audience: str = "ecommerce"
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key"
        public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        self.jwk = jwt.PyJWK.from_dict(
            {**public_jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}
        )
        self.statuses: dict[uuid.UUID, UserStatus] = {}

    async def get_key(self, kid: str, *, refresh: bool = False) -> jwt.PyJWK | None:
        return self.jwk if kid == self.kid else None

    async def get_status(self, user_id: uuid.UUID) -> UserStatus | None:
        return self.statuses.get(user_id)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self, self, issuer=self.issuer, audience=self.audience)

    def token(
        self,
        user_id: uuid.UUID | None = None,
        *,
        role: str = "customer",
        active: bool = True,
        expires_in: int = 900,
        **claims: Any,
    ) -> str:
        user_id = user_id or uuid.uuid4()
        self.statuses[user_id] = UserStatus(is_active=active, role=role)
        now = int(time.time())
        payload = {
            "sub": str(user_id),
            "role": role,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + expires_in,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})

    def headers(self, user_id: uuid.UUID | None = None, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, **kwargs)}"}
