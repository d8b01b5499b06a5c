"""Reading an uploaded certificate and its private key (PEM, or PKCS#12 with a passphrase).

The key is kept as unencrypted PKCS#8 PEM inside the secret box (encrypted at rest with the
service's keys); the passphrase opens the upload and is then forgotten. A PKCS#12 file's
key-derivation rounds are counted and capped before it is opened (``pkcs12_rounds``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from mailintake_config_api.pkcs12_rounds import TooManyRoundsError, UnreadableError, check_rounds

_KEY_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
)


class CertificateError(ValueError):
    """The upload is not a certificate with its matching private key; the message says why."""


@dataclass(frozen=True)
class KeyPairUpload:
    certificate: x509.Certificate
    private_key_pem: str  # PKCS#8, unencrypted: for the secret box only

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def fingerprint_sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()


def read_upload(
    pem: str | None, pkcs12_base64: str | None, passphrase: str | None
) -> KeyPairUpload:
    if pkcs12_base64 is not None:
        return _from_pkcs12(pkcs12_base64, passphrase)
    if pem is None:
        raise CertificateError("give `pem` or `pkcs12_base64`")
    return _from_pem(pem, passphrase)


def _from_pem(pem: str, passphrase: str | None) -> KeyPairUpload:
    data = pem.encode("utf-8", "replace")
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError("no PEM certificate (BEGIN CERTIFICATE) in `pem`") from exc
    found = _KEY_BLOCK.search(data)  # before or after the certificate
    key_block = found.group() if found else b""
    try:
        key = serialization.load_pem_private_key(
            key_block, passphrase.encode() if passphrase else None
        )
    except TypeError as exc:  # encrypted without a passphrase, or the reverse
        raise CertificateError(f"the private key's passphrase: {exc}") from exc
    except ValueError as exc:
        raise CertificateError(
            "no readable private key in `pem` (a wrong passphrase, or no PRIVATE KEY block)"
        ) from exc
    return _pair(certificate, key)


def _from_pkcs12(encoded: str, passphrase: str | None) -> KeyPairUpload:
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:  # non-ASCII text is a ValueError
        raise CertificateError("`pkcs12_base64` is not base64") from exc
    try:  # before any round is spent: the file chooses its own counts
        check_rounds(data, passphrase)
    except TooManyRoundsError as exc:
        raise CertificateError(str(exc)) from None
    except UnreadableError as exc:
        raise CertificateError(
            f"unreadable PKCS#12 (a wrong passphrase, or not PKCS#12: {exc})"
        ) from None
    try:
        key, certificate, _chain = pkcs12.load_key_and_certificates(
            data, passphrase.encode() if passphrase else None
        )
    except ValueError as exc:
        raise CertificateError("unreadable PKCS#12 (a wrong passphrase, or not PKCS#12)") from exc
    if certificate is None or key is None:
        raise CertificateError("the PKCS#12 file must hold a certificate and its private key")
    return _pair(certificate, key)


def _pair(certificate: x509.Certificate, key: object) -> KeyPairUpload:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError("only RSA and EC private keys are supported")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise CertificateError("the private key does not belong to the certificate")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return KeyPairUpload(certificate, pem)
