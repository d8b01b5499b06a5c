"""Encryption of secrets at rest (passwords, client secrets, refresh tokens, private keys).

Fernet (AES-128-CBC with HMAC-SHA256) through ``MultiFernet``: the first configured key
encrypts, every configured key decrypts, so a key is rotated by putting a new one in front,
re-encrypting (``SecretBox.rotate``) and then dropping the old one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class SecretKeyError(RuntimeError):
    """Raised when the encryption keys are missing or malformed."""


class SecretDecryptError(RuntimeError):
    """Raised when a stored secret cannot be decrypted with any configured key."""


def generate_key() -> str:
    """A new random Fernet key, URL-safe base64 text."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypts and decrypts secret strings with the configured keys."""

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        if not keys:
            raise SecretKeyError(
                "no encryption key configured: set MAILINTAKE_ENCRYPTION_KEYS "
                "(generate one with `mailintake-keygen`)"
            )
        fernets = []
        for position, key in enumerate(keys, start=1):
            raw = key.get_secret_value() if isinstance(key, SecretStr) else key
            try:
                fernets.append(Fernet(raw.encode("ascii")))
            except (ValueError, UnicodeEncodeError) as exc:
                raise SecretKeyError(
                    f"encryption key #{position} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from exc
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(token).decode("utf-8"))
        except InvalidToken as exc:
            raise SecretDecryptError(
                "stored secret cannot be decrypted with any configured key"
            ) from exc

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt ``token`` with the current (first) key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise SecretDecryptError(
                "stored secret cannot be decrypted with any configured key"
            ) from exc


def keygen_main() -> None:
    """Console entry point ``mailintake-keygen``: print a new encryption key."""
    print(generate_key())
