"""Signing keys and the JWKS.

Production loads the private key from configuration; development generates one into
DATA_DIR/jwt on first run. Rotation (`python -m user_service.keys rotate`, development
key files only) keeps the retired public key in the JWKS so tokens it signed keep
verifying until they expire.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)

from user_service.config import Settings, get_settings

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_PEM_PUBLIC_KEY = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class KeyConfigurationError(RuntimeError):
    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: PublicKey) -> dict[str, Any]:
    """The key as a JWK with its RFC 7638 thumbprint as `kid`."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        members = {
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        }
        algorithm = "RS256"
    else:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        algorithm = "EdDSA"
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**members, "kid": kid, "alg": algorithm, "use": "sig"}


def _as_private_key(key: PrivateKeyTypes) -> PrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyConfigurationError("the signing key must be RSA or Ed25519")
    return key


def _as_public_key(key: PublicKeyTypes) -> PublicKey:
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise KeyConfigurationError("retired keys must be RSA or Ed25519 public keys")
    return key


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class KeyRing:
    """The key that signs new tokens and every key whose tokens still verify."""

    private_key: PrivateKey
    retired: list[PublicKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.signing_jwk = public_jwk(self.private_key.public_key())
        self.kid: str = self.signing_jwk["kid"]
        self.algorithm: str = self.signing_jwk["alg"]
        published = [self.signing_jwk, *(public_jwk(key) for key in self.retired)]
        unique = {jwk["kid"]: jwk for jwk in published}
        self.jwks: dict[str, Any] = {"keys": list(unique.values())}
        self._verification = {kid: jwt.PyJWK.from_dict(jwk) for kid, jwk in unique.items()}

    async def get_key(self, kid: str, *, refresh: bool = False) -> jwt.PyJWK | None:
        """`shared.auth.KeySource`: the user service verifies tokens without a JWKS call."""
        return self._verification.get(kid)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid}
        )


def parse_public_keys(text: str) -> list[PublicKey]:
    return [
        _as_public_key(serialization.load_pem_public_key(block.encode()))
        for block in _PEM_PUBLIC_KEY.findall(text)
    ]


def _key_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "jwt"


def _write_exclusive(path: Path, data: bytes) -> bool:
    """Create `path` only if it does not exist (two workers starting at once agree)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return True


def load_key_ring(settings: Settings) -> KeyRing:
    """Load the configured key, or in development create/load DATA_DIR/jwt/signing-key.pem."""
    retired = parse_public_keys(settings.jwt_previous_public_keys)
    if settings.jwt_private_key is not None:
        pem = settings.jwt_private_key.get_secret_value().encode()
    elif settings.jwt_private_key_file:
        pem = Path(settings.jwt_private_key_file).read_bytes()
    elif settings.is_production:
        raise KeyConfigurationError(
            "JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE must be set when ENVIRONMENT=production"
        )
    else:
        directory = _key_dir(settings)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "signing-key.pem"
        _write_exclusive(path, private_pem(generate_private_key(settings.jwt_algorithm)))
        pem = path.read_bytes()
        for retired_file in sorted(directory.glob("retired-*.pem")):
            retired.extend(parse_public_keys(retired_file.read_text()))
    private_key = _as_private_key(serialization.load_pem_private_key(pem, password=None))
    return KeyRing(private_key, retired)


def rotate_development_key(settings: Settings) -> KeyRing:
    """Retire the current development key (kept in the JWKS) and start signing with a new one."""
    if settings.has_configured_key():
        raise KeyConfigurationError(
            "the signing key comes from configuration: rotate it there, moving the old "
            "public key to JWT_PREVIOUS_PUBLIC_KEYS"
        )
    current = load_key_ring(settings)
    directory = _key_dir(settings)
    (directory / f"retired-{current.kid}.pem").write_bytes(
        public_pem(current.private_key.public_key())
    )
    new_path = directory / "signing-key.pem.new"
    new_path.write_bytes(private_pem(generate_private_key(settings.jwt_algorithm)))
    new_path.chmod(0o600)
    new_path.replace(directory / "signing-key.pem")
    return load_key_ring(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description="Manage the user service's signing keys.")
    parser.add_argument("command", choices=["show", "rotate"])
    args = parser.parse_args()
    settings = get_settings()
    ring = rotate_development_key(settings) if args.command == "rotate" else load_key_ring(settings)
    print(json.dumps({"signing_kid": ring.kid, "jwks": ring.jwks}, indent=2))


if __name__ == "__main__":
    main()
