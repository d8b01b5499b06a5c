"""Encryption of secrets at rest (passwords, client secrets, tokens, private keys), each bound
to where it belongs.

AES-256-GCM (``cryptography``'s AESGCM) with the secret's *binding* as associated data: the
row it belongs to and, for what is sent somewhere, its destination (``db/bindings.py``). A
ciphertext copied to another row, or left in a row whose destination was edited outside the
API (a tampered backup, a hand-made UPDATE), fails to decrypt instead of going elsewhere.

A token is ``0x01 | key id (8 bytes) | nonce (12) | ciphertext and tag``. The keys are the
settings' ``MAILINTAKE_ENCRYPTION_KEYS`` (32 url-safe base64-encoded bytes each, the format
``mailintake-keygen`` prints); each AES key and key id is derived from one with HKDF-SHA256.
The first key encrypts, every key decrypts, so a key is rotated by putting a new one in
front, re-encrypting (``SecretBox.rotate``) and then dropping the old one.

Tokens of the earlier format (Fernet, unbound) are read only by ``open_unbound``, for the
migration that binds them.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

VERSION = b"\x01"
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER_BYTES = len(VERSION) + _KEY_ID_BYTES


class SecretKeyError(RuntimeError):
    """Raised when the encryption keys are missing or malformed."""


class SecretDecryptError(RuntimeError):
    """Raised when a stored secret cannot be decrypted with any configured key."""


class SecretBindingError(SecretDecryptError):
    """Raised when a stored secret does not belong where it is found: another row's, or its
    row's destination was changed outside the API (or the ciphertext was altered)."""


def generate_key() -> str:
    """A new random key: 32 bytes, URL-safe base64 text."""
    return Fernet.generate_key().decode("ascii")


def _derive(raw: bytes, purpose: bytes, length: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose)
    return hkdf.derive(raw)


@dataclass(frozen=True)
class _Key:
    key_id: bytes
    aead: AESGCM


class SecretBox:
    """Encrypts and decrypts secret strings with the configured keys, bound to a context
    (bytes that say whose secret it is and where it may go)."""

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        if not keys:
            raise SecretKeyError(
                "no encryption key configured: set MAILINTAKE_ENCRYPTION_KEYS "
                "(generate one with `mailintake-keygen`)"
            )
        self._keys: list[_Key] = []
        fernets = []
        for position, key in enumerate(keys, start=1):
            text = key.get_secret_value() if isinstance(key, SecretStr) else key
            try:
                raw = base64.urlsafe_b64decode(text.encode("ascii"))
                fernets.append(Fernet(text.encode("ascii")))
            except (ValueError, UnicodeEncodeError, binascii.Error) as exc:
                raise SecretKeyError(
                    f"encryption key #{position} is not a valid key "
                    "(32 url-safe base64-encoded bytes, as `mailintake-keygen` prints)"
                ) from exc
            aead = AESGCM(_derive(raw, b"mailintake secretbox aes-256-gcm", 32))
            key_id = _derive(raw, b"mailintake secretbox key id", _KEY_ID_BYTES)
            self._keys.append(_Key(key_id, aead))
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str, context: bytes) -> bytes:
        """``plaintext`` encrypted with the first key, bound to ``context``."""
        key = self._keys[0]
        header = VERSION + key.key_id
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, plaintext.encode("utf-8"), header + context)
        return header + nonce + sealed

    def decrypt(self, token: bytes, context: bytes) -> SecretStr:
        """The secret, if ``token`` was encrypted for ``context`` with a configured key.

        Raises ``SecretBindingError`` when it was made for another context (or altered),
        ``SecretDecryptError`` when no configured key made it."""
        token = bytes(token)
        if token[:1] != VERSION or len(token) < _HEADER_BYTES + _NONCE_BYTES:
            raise SecretDecryptError(
                "stored secret is not in the bound format (stored before secrets were bound "
                "to their destination: migrate the database, `mailintake-migrate`)"
            )
        header, rest = token[:_HEADER_BYTES], token[_HEADER_BYTES:]
        key = next((k for k in self._keys if k.key_id == header[1:]), None)
        if key is None:
            raise SecretDecryptError("stored secret cannot be decrypted with any configured key")
        try:
            plain = key.aead.decrypt(rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], header + context)
        except InvalidTag as exc:
            raise SecretBindingError(
                "stored secret does not belong here: it was made for another row or "
                "destination (changed outside the API?), or it was altered"
            ) from exc
        return SecretStr(plain.decode("utf-8"))

    def rotate(self, token: bytes, context: bytes) -> bytes:
        """``token`` re-encrypted with the current (first) key, for the same context."""
        return self.encrypt(self.decrypt(token, context).get_secret_value(), context)

    def open_unbound(self, token: bytes) -> SecretStr:
        """A secret of the earlier, unbound format (Fernet), to bind it (migrations only)."""
        try:
            return SecretStr(self._fernet.decrypt(bytes(token)).decode("utf-8"))
        except InvalidToken as exc:
            raise SecretDecryptError(
                "stored secret cannot be decrypted with any configured key"
            ) from exc


def is_unbound(token: bytes) -> bool:
    """A token of the earlier format (Fernet: URL-safe base64 text of version byte 0x80)."""
    return bytes(token[:1]) == b"g"


def keygen_main() -> None:
    """Console entry point ``mailintake-keygen``: print a new encryption key."""
    print(generate_key())
