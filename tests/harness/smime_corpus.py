"""The S/MIME corpus in ``tests/data/smime`` (made by its ``make-corpus.sh``, described in its
README): messages as mail clients send them, with the test keys that open and sign them."""

from __future__ import annotations

import base64
import uuid
from email import message_from_bytes
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailintake_shared.smime import KeyPair

CORPUS = Path(__file__).resolve().parents[1] / "data" / "smime"
SECRET_WORDS = b"quarterly numbers"  # in every message's innermost content

# What each message is, and what the store must make of it.
DECRYPTED = {  # message → the corpus key that opens it
    "enveloped-aes128-der": "alice",
    "enveloped-aes192-ber": "alice",
    "enveloped-aes256-ber": "alice",
    "enveloped-3des-der": "alice",
    "enveloped-3des-ber": "alice",
    "enveloped-aes128-gcm-der": "alice",
    "enveloped-aes256-gcm-ber": "alice",
    "enveloped-oaep-sha1": "alice",
    "enveloped-oaep-sha256-ber": "alice",
    "enveloped-keyid": "alice",
    "enveloped-two-recipients": "alice",
    "enveloped-ecdh-sha1kdf": "eve",
    "enveloped-ecdh-sha256kdf-ber": "eve",
    "enveloped-ecdh-cofactor": "eve",
    "enveloped-ecdh-aes256-gcm": "eve",
}
SIGNED = {  # message → its signer; each signature is valid
    "signed-detached-sha1-ber": "bob",
    "signed-detached-sha224": "bob",
    "signed-detached-sha256-ber": "bob",
    "signed-detached-sha256-der": "bob",
    "signed-detached-sha384": "bob",
    "signed-detached-sha512": "bob",
    "signed-opaque-sha1-der": "bob",
    "signed-opaque-sha256-ber": "bob",
    "signed-noattr": "bob",
    "signed-keyid": "bob",
    "signed-pss": "bob",
    "signed-pss-sha512-opaque": "bob",
    "signed-ecdsa-detached": "eve",
    "signed-ecdsa-opaque-ber": "eve",
    "signed-twice-ber": "bob",  # an ECDSA signature by eve over bob's: the inner signer counts
}
NESTED = {  # message → (the key that opens it, the signer)
    "signed-then-encrypted-ber": ("alice", "bob"),
    "encrypted-then-signed": ("alice", "bob"),
}
TAMPERED = {  # message → what the problem says
    "tampered-detached-content": "the content does not match its signature (digest differs)",
    "tampered-opaque-content": "the content does not match its signature (digest differs)",
    "tampered-noattr-content": "the signature does not match the content and the signer's key",
    "tampered-signature": (
        "the signature over the signed attributes does not match the signer's key"
    ),
}
UNSUPPORTED = {  # message → what the problem says
    "enveloped-aria256": "not supported: content encryption 1.2.410.200046.1.1.12",
    "enveloped-password": (
        "no certificate of this connection matches the message's recipients; "
        "not supported: recipients by password"
    ),
    "signed-dsa": "not supported: dsa signatures with a DSAPublicKey",
}


def message(name: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes()


def every_message() -> set[str]:
    return {path.stem for path in CORPUS.glob("*.eml")}


def certificate_pem(name: str) -> bytes:
    return (CORPUS / f"{name}.crt").read_bytes()


def certificate(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certificate_pem(name))


def key_pem(name: str) -> bytes:
    return (CORPUS / f"{name}.key").read_bytes()


def key_pair(name: str) -> KeyPair:
    key = serialization.load_pem_private_key(key_pem(name), None)
    return KeyPair(uuid.uuid4(), name, certificate(name), key)


def _cms_payload(raw: bytes) -> str:
    """The base64 text of a message's outer S/MIME layer (its signature, when detached),
    exactly as it stands in the message."""
    entity = message_from_bytes(raw)
    if entity.get_content_type() == "multipart/signed":
        entity = entity.get_payload(1)  # type: ignore[assignment]
    payload = entity.get_payload()
    assert isinstance(payload, str)
    return payload


def cms_of(raw: bytes) -> bytes:
    """The CMS bytes of a message's outer S/MIME layer."""
    return base64.b64decode(_cms_payload(raw))


def with_cms(raw: bytes, der: bytes) -> bytes:
    """The message with other CMS bytes in its outer S/MIME layer."""
    payload = _cms_payload(raw).encode("ascii")
    assert payload in raw
    return raw.replace(payload, base64.encodebytes(der), 1)
