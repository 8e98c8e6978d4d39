"""Signing secrets: made here, shown once, stored encrypted with `WEBHOOK_SECRET_KEYS`."""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: 32 random bytes, as the Standard Webhooks specification suggests (24 to 64).
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh `whsec_<base64>` secret, the format the `standardwebhooks` libraries read."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class SecretUnreadable(Exception):
    """A stored secret none of the configured keys decrypts (a key was dropped too soon)."""


class SecretBox:
    """Encrypts with the first key, decrypts with any (so keys can be rotated)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode("ascii"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("ascii")
        except InvalidToken:
            raise SecretUnreadable("no configured key decrypts this webhook secret") from None
