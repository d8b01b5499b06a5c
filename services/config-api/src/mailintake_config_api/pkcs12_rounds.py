"""The key-derivation rounds a PKCS#12 file asks for, counted before they are spent.

A PKCS#12 file (RFC 7292) names its own iteration counts — of its MAC, of each encrypted
part, of each shrouded key — and a loader spends them all: 2^31 is minutes of CPU for one
upload. ``check_rounds`` adds them up first and refuses a file that asks for more than
``MAX_ROUNDS``. A key hidden inside an encrypted part is counted too: the part is decrypted
here (its own rounds counted first) and its bags read, so no count escapes the sum.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc5652, rfc7292, rfc8018

from mailintake_config_api import rc2

MAX_ROUNDS = 1_000_000  # summed over the file; exports use 2,048 to 10,000 per part
_MAX_PARTS = 64  # content infos, bags, nesting: what one certificate and its key need

_PRFS: dict[univ.ObjectIdentifier, type[hashes.HashAlgorithm]] = {
    rfc8018.id_hmacWithSHA1: hashes.SHA1,
    rfc8018.id_hmacWithSHA224: hashes.SHA224,
    rfc8018.id_hmacWithSHA256: hashes.SHA256,
    rfc8018.id_hmacWithSHA384: hashes.SHA384,
    rfc8018.id_hmacWithSHA512: hashes.SHA512,
}
Decrypt = Callable[[bytes, bytes, bytes], bytes]  # key, IV, data → data in clear, padded


def _cbc(cipher: Callable[[bytes], BlockCipherAlgorithm]) -> Decrypt:
    def decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
        decryptor = Cipher(cipher(key), modes.CBC(iv)).decryptor()
        return decryptor.update(data) + decryptor.finalize()

    return decrypt


def _rc2(key: bytes, iv: bytes, data: bytes) -> bytes:
    return rc2.decrypt_cbc(key, 8 * len(key), iv, data)


def _triple_des(key: bytes, iv: bytes, data: bytes) -> bytes:
    if len(key) == 16:
        key += key[:8]  # two-key triple DES
    return _cbc(TripleDES)(key, iv, data)


# OID: (key bytes, block bytes, decryption)
_PBES2_CIPHERS: dict[univ.ObjectIdentifier, tuple[int, int, Decrypt]] = {
    rfc8018.aes128_CBC_PAD: (16, 16, _cbc(algorithms.AES)),
    rfc8018.aes192_CBC_PAD: (24, 16, _cbc(algorithms.AES)),
    rfc8018.aes256_CBC_PAD: (32, 16, _cbc(algorithms.AES)),
    rfc8018.des_EDE3_CBC: (24, 8, _triple_des),
}
_PKCS12_PBE_CIPHERS: dict[univ.ObjectIdentifier, tuple[int, int, Decrypt]] = {  # RFC 7292 C
    rfc7292.pbeWithSHAAnd3_KeyTripleDES_CBC: (24, 8, _triple_des),
    rfc7292.pbeWithSHAAnd2_KeyTripleDES_CBC: (16, 8, _triple_des),
    rfc7292.pbeWithSHAAnd128BitRC2_CBC: (16, 8, _rc2),
    rfc7292.pbeWithSHAAnd40BitRC2_CBC: (5, 8, _rc2),
}
_PBES1 = {
    rfc8018.pbeWithMD2AndDES_CBC,
    rfc8018.pbeWithMD2AndRC2_CBC,
    rfc8018.pbeWithMD5AndDES_CBC,
    rfc8018.pbeWithMD5AndRC2_CBC,
    rfc8018.pbeWithSHA1AndDES_CBC,
    rfc8018.pbeWithSHA1AndRC2_CBC,
}


class TooManyRoundsError(ValueError):
    """The file asks for more key-derivation rounds than ``MAX_ROUNDS``; the message says so."""


class UnreadableError(ValueError):
    """Not a PKCS#12 file this service can count, or a wrong passphrase."""


def check_rounds(data: bytes, passphrase: str | None) -> int:
    """The rounds ``data`` asks for in all; raises ``TooManyRoundsError`` past the cap (before
    spending any of them) and ``UnreadableError`` when the file cannot be read."""
    counter = _Rounds(passphrase or "")
    try:
        pfx = _decode(data, rfc7292.PFX())
        if pfx["macData"].isValue:
            counter.spend(int(pfx["macData"]["iterations"]))
        auth_safe = _decode(_octets(pfx["authSafe"]), rfc7292.AuthenticatedSafe())
        for info in _bounded(auth_safe):
            if info["contentType"] == rfc5652.id_data:
                counter.bags(_decode(_octets(info), rfc7292.SafeContents()))
            elif info["contentType"] == rfc5652.id_encryptedData:
                encrypted = _decode(info["content"], rfc5652.EncryptedData())
                content = encrypted["encryptedContentInfo"]
                plain = counter.decrypt(
                    content["contentEncryptionAlgorithm"], bytes(content["encryptedContent"])
                )
                counter.bags(_decode(plain, rfc7292.SafeContents()))
    except (PyAsn1Error, ValueError, KeyError) as exc:
        if isinstance(exc, TooManyRoundsError):
            raise
        raise UnreadableError(str(exc)) from exc
    return counter.total


def _decode(data: bytes | univ.Any, spec: univ.Asn1Item) -> univ.Asn1Item:
    value, rest = decoder.decode(bytes(data), asn1Spec=spec)
    if rest:
        raise UnreadableError("trailing bytes")
    return value


def _octets(info: rfc5652.ContentInfo) -> bytes:
    if info["contentType"] != rfc5652.id_data:
        raise UnreadableError("only password-protected PKCS#12 is read")
    return bytes(_decode(info["content"], univ.OctetString()))


def _bounded(items: Iterable[univ.Asn1Item]) -> list[univ.Asn1Item]:
    listed = list(items)
    if len(listed) > _MAX_PARTS:
        raise UnreadableError(f"more than {_MAX_PARTS} parts")
    return listed


class _Rounds:
    def __init__(self, passphrase: str) -> None:
        self.total = 0
        self._passphrase = passphrase
        self._depth = 0

    def spend(self, rounds: int) -> None:
        self.total += max(rounds, 1)
        if self.total > MAX_ROUNDS:
            raise TooManyRoundsError(
                f"the PKCS#12 file asks for more than {MAX_ROUNDS} key-derivation rounds (its "
                "iteration counts, summed over its MAC and encrypted parts); at most "
                f"{MAX_ROUNDS} are accepted: export it again with fewer (e.g. `openssl pkcs12 "
                "-export -iter 2048 -maciter`)"
            )

    def bags(self, contents: rfc7292.SafeContents) -> None:
        self._depth += 1
        if self._depth > 4:
            raise UnreadableError("bags nested too deep")
        for bag in _bounded(contents):
            if bag["bagId"] == rfc7292.id_pkcs8ShroudedKeyBag:
                shrouded = _decode(bag["bagValue"], rfc7292.EncryptedPrivateKeyInfo())
                self.spend(self._rounds(shrouded["encryptionAlgorithm"]))
            elif bag["bagId"] == rfc7292.id_safeContentsBag:
                self.bags(_decode(bag["bagValue"], rfc7292.SafeContents()))
        self._depth -= 1

    def _rounds(self, algorithm: rfc8018.AlgorithmIdentifier) -> int:
        oid = algorithm["algorithm"]
        if oid == rfc8018.id_PBES2:
            return int(self._pbkdf2(algorithm)["iterationCount"])
        if oid in _PKCS12_PBE_CIPHERS:
            return int(_decode(algorithm["parameters"], rfc7292.Pkcs_12PbeParams())["iterations"])
        if oid in _PBES1:
            return int(_decode(algorithm["parameters"], rfc8018.PBEParameter())["iterationCount"])
        raise UnreadableError(f"an encryption this service cannot check ({oid})")

    def decrypt(self, algorithm: rfc8018.AlgorithmIdentifier, data: bytes) -> bytes:
        """An encrypted part in clear, its rounds counted (and capped) first."""
        self.spend(self._rounds(algorithm))
        oid = algorithm["algorithm"]
        if oid == rfc8018.id_PBES2:
            kdf = self._pbkdf2(algorithm)
            scheme = _decode(algorithm["parameters"], rfc8018.PBES2_params())["encryptionScheme"]
            if scheme["algorithm"] not in _PBES2_CIPHERS:
                raise UnreadableError(f"an encryption this service cannot check ({oid})")
            size, block, decrypt = _PBES2_CIPHERS[scheme["algorithm"]]
            prf = kdf["prf"]["algorithm"] if kdf["prf"].isValue else rfc8018.id_hmacWithSHA1
            key = PBKDF2HMAC(
                algorithm=_PRFS[prf](),
                length=size,
                salt=bytes(kdf["salt"]["specified"]),
                iterations=int(kdf["iterationCount"]),
            ).derive(self._passphrase.encode("utf-8"))
            iv = bytes(_decode(scheme["parameters"], univ.OctetString()))
            return _unpadded(decrypt(key, iv, data), block)
        if oid not in _PKCS12_PBE_CIPHERS:
            raise UnreadableError(f"an encryption this service cannot check ({oid})")
        size, block, decrypt = _PKCS12_PBE_CIPHERS[oid]
        params = _decode(algorithm["parameters"], rfc7292.Pkcs_12PbeParams())
        salt, rounds = bytes(params["salt"]), int(params["iterations"])
        password = (self._passphrase.encode("utf-16-be") + b"\0\0") if self._passphrase else b""
        key = _pkcs12_kdf(password, salt, 1, rounds, size)
        iv = _pkcs12_kdf(password, salt, 2, rounds, 8)
        return _unpadded(decrypt(key, iv, data), block)

    @staticmethod
    def _pbkdf2(algorithm: rfc8018.AlgorithmIdentifier) -> rfc8018.PBKDF2_params:
        kdf = _decode(algorithm["parameters"], rfc8018.PBES2_params())["keyDerivationFunc"]
        if kdf["algorithm"] != rfc8018.id_PBKDF2:
            raise UnreadableError("PBES2 without PBKDF2")
        return _decode(kdf["parameters"], rfc8018.PBKDF2_params())


def _unpadded(padded: bytes, block_bytes: int) -> bytes:
    unpadder = padding.PKCS7(8 * block_bytes).unpadder()
    return unpadder.update(padded) + unpadder.finalize()  # ValueError: a wrong passphrase


def _pkcs12_kdf(password: bytes, salt: bytes, purpose: int, rounds: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1 (u = 20, v = 64 bytes): 1 makes keys, 2 IVs."""
    u, v = 20, 64

    def stretched(data: bytes) -> bytes:
        return (
            (data * math.ceil(v * math.ceil(len(data) / v) / len(data)))[
                : v * math.ceil(len(data) / v)
            ]
            if data
            else b""
        )

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
