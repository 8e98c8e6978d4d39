"""Service credentials for calling a service's `/internal` routes in tests, signed with
the development keys every service accepts when none is configured."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.service_auth import (
    INTERNAL_PREFIX,
    SERVICE_NAMES,
    ServiceIdentity,
    development_key,
    public_pem,
)

RequestHook = Callable[[httpx.Request], Awaitable[None]]


def service_headers(caller: str, callee: str) -> dict[str, str]:
    """The credential `caller` presents on `callee`'s internal routes."""
    identity = ServiceIdentity(caller, development_key(caller))
    return {"Authorization": identity.authorization(callee)}


def signs_internal_calls(caller: str, callee: str) -> RequestHook:
    """An httpx request hook: a call to an `/internal` route without an `Authorization`
    of its own carries `caller`'s credential, as `caller`'s own client sends it."""
    identity = ServiceIdentity(caller, development_key(caller))

    async def sign(request: httpx.Request) -> None:
        if request.url.path.startswith(INTERNAL_PREFIX) and "authorization" not in request.headers:
            request.headers["Authorization"] = identity.authorization(callee)

    return sign


def production_credentials(service: str) -> dict[str, str]:
    """Settings values that pass production's check: a new key of `service`'s own and
    every service's public key (all of them new, none a development key)."""
    keys = {name: Ed25519PrivateKey.generate() for name in SERVICE_NAMES}
    private_pem = keys[service].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "service_private_key": private_pem.decode(),
        "service_public_keys": json.dumps({name: public_pem(key) for name, key in keys.items()}),
    }
