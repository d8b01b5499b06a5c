"""The key-derivation rounds a PKCS#12 file asks for, counted before they are spent.

A PKCS#12 file (RFC 7292) names its own iteration counts — of its MAC, of each encrypted
part, of each shrouded key — and a loader spends them all: 2^31 is minutes of CPU for one
upload. ``check_rounds`` adds them up first (asn1crypto reads the structures, BER or DER)
and refuses a file that asks for more than ``MAX_ROUNDS``. A key hidden inside an encrypted
part is counted too: the part is decrypted here (its own rounds counted first) and its bags
read, so no count escapes the sum.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

from asn1crypto import algos, pkcs12
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from mailintake_config_api import rc2

MAX_ROUNDS = 1_000_000  # summed over the file; exports use 2,048 to 10,000 per part
_MAX_PARTS = 64  # content infos and bags in one list: what a certificate and its key need
_MAX_DEPTH = 4  # bags of bags


class TooManyRoundsError(ValueError):
    """The file asks for more key-derivation rounds than ``MAX_ROUNDS``; the message says so."""


class UnreadableError(ValueError):
    """Not a PKCS#12 file this service can count, or a wrong passphrase."""


def check_rounds(data: bytes, passphrase: str | None) -> int:
    """The rounds ``data`` asks for in all; raises ``TooManyRoundsError`` past the cap (before
    spending any of them) and ``UnreadableError`` when the file cannot be read."""
    counter = _Rounds(passphrase or "")
    try:
        pfx = pkcs12.Pfx.load(data)
        if pfx["mac_data"].native is not None:
            counter.spend(pfx["mac_data"]["iterations"].native)
        for info in _bounded(pfx.authenticated_safe):
            kind = info["content_type"].native
            if kind == "data":
                counter.bags(pkcs12.SafeContents.load(info["content"].native), 1)
            elif kind == "encrypted_data":
                content = info["content"]["encrypted_content_info"]
                plain = counter.decrypt(
                    content["content_encryption_algorithm"], content["encrypted_content"].native
                )
                counter.bags(pkcs12.SafeContents.load(plain), 1)
            else:
                raise UnreadableError(f"a part this service cannot check ({kind})")
    except TooManyRoundsError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # asn1crypto's among them
        raise UnreadableError(str(exc) or type(exc).__name__) from exc
    return counter.total


def _bounded(items: Iterable[Any]) -> list[Any]:
    listed = list(items)
    if len(listed) > _MAX_PARTS:
        raise UnreadableError(f"more than {_MAX_PARTS} parts")
    return listed


class _Rounds:
    def __init__(self, passphrase: str) -> None:
        self.total = 0
        self._passphrase = passphrase

    def spend(self, rounds: int) -> None:
        self.total += max(int(rounds), 1)
        if self.total > MAX_ROUNDS:
            raise TooManyRoundsError(
                f"the PKCS#12 file asks for more than {MAX_ROUNDS} key-derivation rounds (its "
                "iteration counts, summed over its MAC and encrypted parts); at most "
                f"{MAX_ROUNDS} are accepted: export it again with fewer (e.g. `openssl pkcs12 "
                "-export -iter 2048 -maciter`)"
            )

    def bags(self, contents: pkcs12.SafeContents, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise UnreadableError("bags nested too deep")
        for bag in _bounded(contents):
            kind = bag["bag_id"].native
            if kind == "pkcs8_shrouded_key_bag":
                self.spend(_rounds(bag["bag_value"]["encryption_algorithm"]))
            elif kind == "safe_contents":
                self.bags(bag["bag_value"], depth + 1)

    def decrypt(self, algorithm: algos.EncryptionAlgorithm, data: bytes) -> bytes:
        """An encrypted part in clear, its rounds counted (and capped) first."""
        rounds = _rounds(algorithm)
        self.spend(rounds)
        cipher, size, salt = algorithm.encryption_cipher, algorithm.key_length, algorithm.kdf_salt
        if algorithm.kdf == "pbkdf2":
            prf: type[hashes.HashAlgorithm] = getattr(hashes, algorithm.kdf_hmac.upper())
            kdf = PBKDF2HMAC(prf(), size, salt, rounds)
            key, iv = kdf.derive(self._passphrase.encode("utf-8")), algorithm.encryption_iv
        elif algorithm.kdf == "pkcs12_kdf" and algorithm.kdf_hmac == "sha1":
            password = self._passphrase.encode("utf-16-be") + b"\0\0" if self._passphrase else b""
            key = _pkcs12_kdf(password, salt, 1, rounds, size)
            iv = _pkcs12_kdf(password, salt, 2, rounds, 8)
        else:
            raise UnreadableError(f"an encryption this service cannot check ({algorithm.kdf})")
        if cipher == "aes":
            padded = _cbc(algorithms.AES(key), iv, data)
        elif cipher == "tripledes":
            padded = _cbc(TripleDES(key + key[:8] if size == 16 else key), iv, data)
        elif cipher == "rc2":
            padded = rc2.decrypt_cbc(key, 8 * size, iv, data)
        else:
            raise UnreadableError(f"an encryption this service cannot check ({cipher})")
        block = 16 if cipher == "aes" else 8
        unpadder = padding.PKCS7(8 * block).unpadder()
        return unpadder.update(padded) + unpadder.finalize()  # ValueError: a wrong passphrase


def _rounds(algorithm: algos.EncryptionAlgorithm) -> int:
    if algorithm.kdf not in ("pbkdf2", "pbkdf1", "pkcs12_kdf"):
        raise UnreadableError(f"an encryption this service cannot check ({algorithm.kdf})")
    rounds: int = algorithm.kdf_iterations
    return rounds


def _cbc(cipher: algorithms.AES | TripleDES, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _pkcs12_kdf(password: bytes, salt: bytes, purpose: int, rounds: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1 (u = 20, v = 64 bytes): 1 makes keys, 2 IVs."""
    u, v = 20, 64

    def stretched(data: bytes) -> bytes:
        if not data:
            return b""
        length = v * math.ceil(len(data) / v)
        return (data * math.ceil(length / len(data)))[:length]

    block = stretched(salt) + stretched(password)
    out = b""
    while len(out) < size:
        # The KDF the file's format prescribes: SHA-1 only reads the file here.
        digest = hashlib.sha1(bytes([purpose]) * v + block, usedforsecurity=False).digest()
        for _ in range(rounds - 1):
            digest = hashlib.sha1(digest, usedforsecurity=False).digest()
        out += digest
        addend = int.from_bytes((digest * math.ceil(v / u))[:v], "big") + 1
        block = b"".join(
            ((int.from_bytes(block[i : i + v], "big") + addend) % (1 << (v * 8))).to_bytes(v, "big")
            for i in range(0, len(block), v)
        )
    return out[:size]
