"""S/MIME material for tests: certificates made with ``cryptography`` (any validity period,
expired ones included), messages encrypted and signed by the ``openssl`` command line, as a
sending mail client would make them."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

INNER = (
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"The quarterly numbers are attached in confidence.\r\n"
)


@dataclass(frozen=True)
class Identity:
    name: str
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: str | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode())
            if passphrase
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def pkcs12(self, passphrase: str) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            self.name.encode(),
            self.key,
            self.certificate,
            None,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )


def identity(
    name: str, *, kind: str = "rsa", valid_days: int = 365, expired: bool = False
) -> Identity:
    """A self-signed certificate for ``name@example.test``."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    email = f"{name}@example.test"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
        ]
    )
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(days=400), now - timedelta(days=35))
        if expired
        else (now - timedelta(days=1), now + timedelta(days=valid_days))
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Identity(name, certificate, key)


def _openssl(args: list[str], stdin: bytes) -> bytes:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} {args[1]}: {done.stderr.decode(errors='replace')}")
    return done.stdout


class Smime:
    """Messages as ``openssl smime``/``openssl cms`` make them, with mail headers."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="mismime"))

    def _file(self, name: str, data: bytes) -> str:
        path = self._dir / name
        path.write_bytes(data)
        return str(path)

    def _headers(self, subject: str) -> list[str]:
        return ["-from", "sender@example.test", "-to", "inbox@example.test", "-subject", subject]

    def encrypt(self, inner: bytes, recipient: Identity, subject: str) -> bytes:
        """Enveloped data (AES-256); ``openssl cms`` for EC recipients (key agreement), which
        ``openssl smime`` (PKCS#7) cannot make."""
        tool = "smime" if isinstance(recipient.key, rsa.RSAPrivateKey) else "cms"
        cert = self._file(f"{recipient.name}.crt", recipient.certificate_pem)
        return _openssl([tool, "-encrypt", "-aes256", *self._headers(subject), cert], inner)

    def sign(self, inner: bytes, signer: Identity, subject: str, *, opaque: bool = False) -> bytes:
        cert = self._file(f"{signer.name}.crt", signer.certificate_pem)
        key = self._file(f"{signer.name}.key", signer.key_pem())
        mode = ["-nodetach"] if opaque else []
        args = ["smime", "-sign", *mode, "-signer", cert, "-inkey", key, *self._headers(subject)]
        return _openssl(args, inner)

    def sign_then_encrypt(
        self, inner: bytes, signer: Identity, recipient: Identity, subject: str
    ) -> bytes:
        cert = self._file(f"{signer.name}.crt", signer.certificate_pem)
        key = self._file(f"{signer.name}.key", signer.key_pem())
        signed = _openssl(["smime", "-sign", "-signer", cert, "-inkey", key], inner)
        return self.encrypt(signed, recipient, subject)


def tamper(message: bytes, old: bytes, new: bytes) -> bytes:
    assert old in message
    return message.replace(old, new, 1)


def corrupt_envelope(message: bytes) -> bytes:
    """An enveloped message whose ciphertext is damaged while its structure still parses:
    the last byte of the next-to-last cipher block flipped, which breaks the padding."""
    head, _, body = message.partition(b"\n\n")
    der = bytearray(base64.b64decode(b"".join(body.split())))
    der[-17] ^= 0xFF
    return head + b"\n\n" + base64.encodebytes(bytes(der))
