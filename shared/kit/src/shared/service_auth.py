"""Service credentials on `/internal` routes: which service is calling, and may it.

Each service holds its own Ed25519 private key and signs, itself, short-lived JWTs
(`TOKEN_SECONDS`) naming it (`sub`) and the service it calls (`aud`), renewed before they
expire. A callee checks the signature against the caller's public key:

- `ServiceCredentialMiddleware` authenticates every request under `/internal/` before
  the app sees it: no credential, a user's access token, a forged, expired or
  wrongly addressed one is a 401 (so not even a 404 or a 422 tells an outsider anything);
- `require_service(...)` on each internal router authorizes: another service's
  credential on a route it does not need is a 403.

Why self-signed keys rather than client-credentials tokens from user_service or shared
secrets: no call depends on user_service being up (every token check calls its status
route: it would need a token to hand out tokens), nothing secret is shared (a callee
holds only its callers' public keys, so a service broken into cannot speak for another),
and the public keys can be handed around like any configuration.

Development and tests need no setup: without `SERVICE_PRIVATE_KEY` / `SERVICE_PUBLIC_KEYS`
every service uses a key derived from its name, which anyone can derive; with
`ENVIRONMENT=production` a service refuses to start on them (`check_production_keys`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import Forbidden, Unauthorized, problem_response

#: Every process of the system, by the name it signs its calls with.
SERVICE_NAMES = (
    "user_service",
    "product_service",
    "order_service",
    "inventory_service",
    "notification_service",
    "api_gateway",
)
ISSUER = "ecommerce-services"
TOKEN_SECONDS = 60
#: A token is renewed this long before it expires (a retried call may wait a while).
RENEW_BEFORE_SECONDS = 20
CLOCK_SKEW_SECONDS = 10
MAX_TOKEN_LENGTH = 2048
#: Verified tokens remembered until they expire (each caller process has one per callee).
MAX_ACCEPTED_TOKENS = 1024
INTERNAL_PREFIX = "/internal/"
_ALGORITHM = "EdDSA"
_KID_PREFIX = "service:"


def development_key(service: str) -> Ed25519PrivateKey:
    """The key a service uses when none is configured: derived from its name, so
    anyone can derive it (production refuses it)."""
    seed = hashlib.sha256(f"ecommerce development service key: {service}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_private_key(pem: str) -> Ed25519PrivateKey:
    """`SERVICE_PRIVATE_KEY`: an Ed25519 private key in PEM (`openssl genpkey -algorithm
    ed25519`); `ValueError` for anything else."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError("SERVICE_PRIVATE_KEY is not a PEM private key") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("SERVICE_PRIVATE_KEY must be an Ed25519 key")
    return key


def load_public_keys(document: str) -> dict[str, tuple[Ed25519PublicKey, ...]]:
    """`SERVICE_PUBLIC_KEYS`: a JSON object of PEM public keys by service name, a list
    of them while a key is rotated; `ValueError` for anything else."""
    try:
        configured = json.loads(document or "{}")
    except ValueError:
        raise ValueError("SERVICE_PUBLIC_KEYS must be a JSON object") from None
    if not isinstance(configured, dict):
        raise ValueError("SERVICE_PUBLIC_KEYS must be a JSON object")
    keys: dict[str, tuple[Ed25519PublicKey, ...]] = {}
    for name, pems in configured.items():
        if name not in SERVICE_NAMES:
            raise ValueError(f"SERVICE_PUBLIC_KEYS names an unknown service: {name!r}")
        listed = pems if isinstance(pems, list) else [pems]
        if not listed:
            raise ValueError(f"SERVICE_PUBLIC_KEYS[{name}] is empty")
        keys[name] = tuple(_load_public_key(name, pem) for pem in listed)
    return keys


def _load_public_key(name: str, pem: object) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(str(pem).encode())
    except (ValueError, TypeError) as error:
        raise ValueError(f"SERVICE_PUBLIC_KEYS[{name}] is not a PEM public key") from error
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"SERVICE_PUBLIC_KEYS[{name}] must be an Ed25519 key")
    return key


def _is_development_key(name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> bool:
    return public_pem(key) == public_pem(development_key(name))


def check_production_keys(service: str, private_pem: str | None, public_keys: str) -> None:
    """What production demands: this service's own key and every service's public key,
    none of them a development one. `ValueError` saying what is missing."""
    if not private_pem:
        raise ValueError("SERVICE_PRIVATE_KEY must be set when ENVIRONMENT=production")
    if _is_development_key(service, load_private_key(private_pem)):
        raise ValueError("SERVICE_PRIVATE_KEY must not be a development key in production")
    keys = load_public_keys(public_keys)
    missing = [name for name in SERVICE_NAMES if name not in keys]
    if missing:
        raise ValueError(
            f"SERVICE_PUBLIC_KEYS must hold every service's public key when "
            f"ENVIRONMENT=production; missing {', '.join(missing)}"
        )
    weak = [
        name
        for name, listed in keys.items()
        if any(_is_development_key(name, key) for key in listed)
    ]
    if weak:
        raise ValueError(f"SERVICE_PUBLIC_KEYS holds development keys for {', '.join(weak)}")


def upstream_service(upstream: str) -> str:
    """The service an upstream of `ServiceClient` is (`product` -> `product_service`)."""
    return upstream if upstream in SERVICE_NAMES else f"{upstream}_service"


class ServiceIdentity:
    """This process's credential: signs, caches and renews one token per callee."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self.name = name
        self.key = key
        self._tokens: dict[str, tuple[float, str]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> ServiceIdentity:
        configured = settings.service_private_key
        name: str = settings.service_name
        if configured is None or not configured.get_secret_value():
            return cls(name, development_key(name))
        return cls(name, load_private_key(configured.get_secret_value()))

    def token(self, audience: str) -> str:
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and cached[0] - now > RENEW_BEFORE_SECONDS:
            return cached[1]
        expires_at = int(now) + TOKEN_SECONDS
        token = jwt.encode(
            {
                "iss": ISSUER,
                "sub": self.name,
                "aud": audience,
                "iat": int(now),
                "exp": expires_at,
                "jti": uuid.uuid4().hex,
            },
            self.key,
            algorithm=_ALGORITHM,
            headers={"kid": f"{_KID_PREFIX}{self.name}"},
        )
        self._tokens[audience] = (expires_at, token)
        return token

    def authorization(self, audience: str) -> str:
        """The `Authorization` header value for a call to `audience`."""
        return f"Bearer {self.token(audience)}"


class ServiceKeys:
    """The public keys this service accepts service credentials from, by service name."""

    def __init__(self, service: str, keys: Mapping[str, tuple[Ed25519PublicKey, ...]]) -> None:
        self.service = service
        self.keys = dict(keys)
        # Verifying costs a few hundred microseconds, and each caller sends the same
        # token for most of a minute: a token once verified is known by its exact text
        # (signature included) until it expires.
        self._accepted: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> ServiceKeys:
        """The configured keys; a service without one configured is known by its
        development key (never in production: the settings refuse to load)."""
        configured = load_public_keys(settings.service_public_keys)
        keys = {
            name: configured.get(name) or (development_key(name).public_key(),)
            for name in SERVICE_NAMES
        }
        return cls(settings.service_name, keys)

    def caller(self, authorization: str | None) -> str:
        """The service a bearer credential identifies; `Unauthorized` for anything else."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("This route needs a service credential.")
        accepted = self._accepted.get(token)
        if accepted is not None and time.time() < accepted[1] + CLOCK_SKEW_SECONDS:
            return accepted[0]
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The service credential is too long to be valid.")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthorized("The service credential is malformed.") from None
        named = isinstance(kid, str) and kid.startswith(_KID_PREFIX)
        name = str(kid).removeprefix(_KID_PREFIX) if named else ""
        keys = self.keys.get(name)
        if not keys:
            raise Unauthorized("This route needs a service credential, not a user's token.")
        for key in keys:
            claims = self._verified(token, key)
            if claims is not None and claims["sub"] == name:
                if len(self._accepted) >= MAX_ACCEPTED_TOKENS:
                    self._accepted.clear()  # a few callers' tokens: never reached in use
                self._accepted[token] = (name, float(claims["exp"]))
                return name
        raise Unauthorized("The service credential is not valid for this service.")

    def _verified(self, token: str, key: Ed25519PublicKey) -> dict[str, Any] | None:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                audience=self.service,
                issuer=ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return None
        return claims


class ServiceCredentialMiddleware:
    """Authenticates every request under `/internal/`: the caller's name goes to
    `request.state.service_caller`, anything without a valid credential is a 401 before
    routing (an outsider learns nothing, not even which internal paths exist)."""

    def __init__(self, app: ASGIApp, *, keys: ServiceKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(INTERNAL_PREFIX):
            try:
                caller = self.keys.caller(_authorization(scope))
            except Unauthorized as error:
                response = problem_response(
                    error.status_code, title=error.title, detail=error.detail, headers=error.headers
                )
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["service_caller"] = caller
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            decoded: str = value.decode("latin-1")
            return decoded
    return None


class ServiceCallers:
    """The dependency `require_service` makes: the caller must be one of `allowed`."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    async def __call__(self, request: Request) -> str:
        caller = getattr(request.state, "service_caller", None)
        if caller is None:
            # Only reachable for a route mounted outside /internal/ by mistake.
            raise Unauthorized("This route needs a service credential.")
        if caller not in self.allowed:
            raise Forbidden(f"{caller} may not call this route.", title="Caller not allowed")
        return str(caller)


def require_service(*callers: str) -> Any:
    """A router dependency: only `callers` (service names) may call its routes.

    `APIRouter(prefix="/internal/v1", dependencies=[require_service("order_service")])`
    """
    unknown = set(callers) - set(SERVICE_NAMES)
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}")
    return Depends(ServiceCallers(frozenset(callers)))


def write_new_keys(folder: Path) -> None:
    """A new key for every service in `folder`: `<service>.pem` (its
    `SERVICE_PRIVATE_KEY`, readable by the owner only) and `public-keys.json` (everyone's
    `SERVICE_PUBLIC_KEYS`)."""
    folder.mkdir(parents=True, exist_ok=True)
    public: dict[str, str] = {}
    for name in SERVICE_NAMES:
        key = Ed25519PrivateKey.generate()
        path = folder / f"{name}.pem"
        path.touch(mode=0o600, exist_ok=False)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public[name] = public_pem(key)
    (folder / "public-keys.json").write_text(json.dumps(public, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover - a command for operators
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "new-keys":
        sys.exit("usage: python -m shared.service_auth new-keys <folder>")
    write_new_keys(Path(sys.argv[2]))
    print(f"wrote {len(SERVICE_NAMES)} private keys and public-keys.json to {sys.argv[2]}")
