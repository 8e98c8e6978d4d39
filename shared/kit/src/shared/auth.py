"""Access-token verification: asymmetric JWTs checked against the user service's JWKS.

Every service (and the gateway, at the edge) verifies tokens the same way: the signing
key is looked up by `kid` in a cached JWKS, only asymmetric algorithms are accepted, and
the algorithm must be the one the key was published for (so an HS256 token "signed" with
the public key, or `alg: none`, never verifies). A token also stops working once its
user is deactivated: the user's current status is looked up and cached briefly.

A token that verified is remembered until it expires, with its key's id: a user sends
the same token with every request, and checking its signature again cost a third of a
millisecond each time (RS256 and PyJWT's claim checks; 5% of order_service's CPU under
the checkout benchmark). A remembered token is still refused once it expires or once its
key leaves the JWKS.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from shared.errors import Forbidden, Unauthorized, problem_answers
from shared.http import ServiceClient, UpstreamUnavailable

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset({"RS256", "EdDSA"})
MAX_TOKEN_LENGTH = 4096
CLOCK_SKEW_SECONDS = 10
#: Verified tokens a verifier remembers (until each expires).
MAX_VERIFIED_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: uuid.UUID
    role: str
    jti: str
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class UserStatus:
    is_active: bool
    role: str


class KeySource(Protocol):
    async def get_key(self, kid: str, *, refresh: bool = False) -> jwt.PyJWK | None: ...


class UserStatusSource(Protocol):
    async def get_status(self, user_id: uuid.UUID) -> UserStatus | None: ...


class RemoteJWKS:
    """The user service's JWKS, cached; an unknown `kid` refetches it (rate limited),
    which is how a rotated key is picked up without a restart."""

    MIN_REFRESH_INTERVAL = 10.0

    def __init__(
        self, client: ServiceClient, *, upstream: str = "user", cache_seconds: float = 300.0
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.cache_seconds = cache_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get_key(self, kid: str, *, refresh: bool = False) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self.cache_seconds
        may_refresh = now - self._fetched_at > self.MIN_REFRESH_INTERVAL
        if stale or (kid not in self._keys and may_refresh):
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < 1.0:
                return  # another request refreshed it while this one waited
            response = await self.client.request(self.upstream, "GET", "/v1/auth/jwks")
            if response.status_code != 200:
                raise _cannot_verify(self.upstream, response)
            keys: dict[str, jwt.PyJWK] = {}
            try:
                for data in response.json().get("keys", []):
                    if data.get("kid") and data.get("alg") in ALLOWED_ALGORITHMS:
                        keys[data["kid"]] = jwt.PyJWK.from_dict(data)
            except (ValueError, TypeError, AttributeError, jwt.PyJWTError) as error:
                raise _cannot_verify(self.upstream, response) from error
            self._keys = keys
            self._fetched_at = time.monotonic()


class RemoteUserStatus:
    """Looks up whether a user is still active (and their current role), cached briefly.

    Concurrent requests of one user share one lookup: when the cached status expires
    under load, every request in flight would otherwise ask user_service at once (and
    on a busy machine a lookup takes long enough for dozens to pile up)."""

    def __init__(
        self, client: ServiceClient, *, upstream: str = "user", cache_seconds: float = 5.0
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.cache_seconds = cache_seconds
        self._cache: dict[uuid.UUID, tuple[float, UserStatus | None]] = {}
        self._lookups: dict[uuid.UUID, asyncio.Task[UserStatus | None]] = {}

    async def get_status(self, user_id: uuid.UUID) -> UserStatus | None:
        cached = self._cache.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        lookup = self._lookups.get(user_id)
        if lookup is None:
            lookup = asyncio.create_task(self._look_up(user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(lambda done: self._forget(user_id, done))
        # Shielded: a caller that goes away does not cancel the others' lookup.
        return await asyncio.shield(lookup)

    def _forget(self, user_id: uuid.UUID, lookup: asyncio.Task[UserStatus | None]) -> None:
        self._lookups.pop(user_id, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: its waiters may all have gone

    async def _look_up(self, user_id: uuid.UUID) -> UserStatus | None:
        now = time.monotonic()
        response = await self.client.request(
            self.upstream, "GET", f"/internal/v1/users/{user_id}/status"
        )
        status = None
        if response.status_code == 200:
            try:
                body = response.json()
                status = UserStatus(is_active=bool(body["is_active"]), role=str(body["role"]))
            except (ValueError, TypeError, KeyError) as error:
                raise _cannot_verify(self.upstream, response) from error
        elif response.status_code != 404:
            raise _cannot_verify(self.upstream, response)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[user_id] = (now, status)
        return status


def _cannot_verify(upstream: str, response: httpx.Response) -> UpstreamUnavailable:
    """A user service that answers, but not what verification needs (its own failure,
    or a refusal of this caller): the caller cannot decide, so 503, not a 500 and not
    a 401 that would send a user with a valid token to log in again."""
    logger.warning(
        "token verification: unexpected answer",
        extra={"upstream": upstream, "status": response.status_code},
    )
    return UpstreamUnavailable("Access tokens cannot be verified right now.")


class TokenVerifier:
    def __init__(
        self,
        keys: KeySource,
        users: UserStatusSource,
        *,
        issuer: str,
        audience: str,
    ) -> None:
        self.keys = keys
        self.users = users
        self.issuer = issuer
        self.audience = audience
        # token -> its claims, and the id of the key that signed it and that key as the
        # JWKS gave it then
        self._verified: dict[str, tuple[TokenClaims, str, jwt.PyJWK]] = {}

    async def verify(self, token: str) -> TokenClaims:
        """Return the token's claims, or raise `Unauthorized` saying why not."""
        claims = await self.decode(token)
        status = await self.users.get_status(claims.user_id)
        if status is None or not status.is_active:
            raise Unauthorized("This account is deactivated or no longer exists.")
        return replace(claims, role=status.role)

    async def decode(self, token: str) -> TokenClaims:
        """Check signature and claims only (no account lookup)."""
        known = self._verified.get(token)
        if known is not None:
            claims, kid, key = known
            # As jwt.decode would judge it now: unexpired (with the same leeway), and its
            # key still the one the JWKS has under its id (a refreshed JWKS checks the
            # token once more).
            if time.time() < claims.expires_at + CLOCK_SKEW_SECONDS and (
                await self.keys.get_key(kid) is key
            ):
                return claims
            self._verified.pop(token, None)
        claims, kid, key = await self._decode(token)
        self._remember(token, (claims, kid, key))
        return claims

    def _remember(self, token: str, entry: tuple[TokenClaims, str, jwt.PyJWK]) -> None:
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            now = time.time()
            self._verified = {
                known: entry
                for known, entry in self._verified.items()
                if now < entry[0].expires_at + CLOCK_SKEW_SECONDS
            }
            if len(self._verified) >= MAX_VERIFIED_TOKENS:
                self._verified.clear()
        self._verified[token] = entry

    async def _decode(self, token: str) -> tuple[TokenClaims, str, jwt.PyJWK]:
        """The claims of a token checked in full, and the id and key that signed it."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The access token is too long to be valid.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthorized("The access token is malformed.") from error
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise Unauthorized("The access token's algorithm is not accepted.")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("The access token names no signing key.")
        key = await self.keys.get_key(kid)
        if key is None:
            raise Unauthorized("The access token was signed by an unknown key.")
        if key.algorithm_name != algorithm:
            raise Unauthorized("The access token's algorithm does not match its key.")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthorized("The access token has expired.") from error
        except jwt.PyJWTError as error:
            raise Unauthorized("The access token is not valid.") from error
        try:
            claims = TokenClaims(
                user_id=uuid.UUID(str(payload["sub"])),
                role=str(payload.get("role", "customer")),
                jti=str(payload["jti"]),
                expires_at=int(payload["exp"]),
            )
        except (ValueError, TypeError) as error:
            raise Unauthorized("The access token's subject is not valid.") from error
        return claims, kid, key


_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/token")


async def get_token_verifier(request: Request) -> TokenVerifier:
    """The app's verifier (made by `ServiceBuilder.add_auth`); tests override this."""
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier


async def current_claims(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    verifier: Annotated[TokenVerifier, Depends(get_token_verifier)],
) -> TokenClaims:
    if credentials is None:
        raise Unauthorized("A bearer access token is required.")
    return await verifier.verify(credentials.credentials)


async def admin_claims(claims: Annotated[TokenClaims, Depends(current_claims)]) -> TokenClaims:
    if not claims.is_admin:
        raise Forbidden("This action needs an administrator.")
    return claims


CurrentClaims = Annotated[TokenClaims, Depends(current_claims)]
AdminClaims = Annotated[TokenClaims, Depends(admin_claims)]


def document_admin_routes(routes: Iterable[BaseRoute]) -> None:
    """Document the 403 of every route that needs an administrator (`AdminClaims`,
    at any depth of its dependencies): FastAPI cannot tell from a dependency what it
    may answer."""
    answer = problem_answers({403: "Administrators only: the caller is not one."})
    for route in routes:
        if isinstance(route, APIRoute) and _depends_on(route.dependant, admin_claims):
            route.responses = {**answer, **route.responses}


def _depends_on(dependant: Dependant, call: Any) -> bool:
    return any(
        dependency.call is call or _depends_on(dependency, call)
        for dependency in dependant.dependencies
    )
