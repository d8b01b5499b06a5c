"""S/MIME: decrypt enveloped mail with the connection's certificates, verify signatures.

Supported: enveloped data (``application/pkcs7-mime`` and ``application/x-pkcs7-mime``,
``smime-type=enveloped-data``) for RSA recipients, decrypted with ``cryptography``; signed
mail, detached (``multipart/signed``) or opaque (``smime-type=signed-data``), with RSA
(PKCS#1 v1.5) or ECDSA signers; any nesting of the two (signed then encrypted is the usual).
Not supported: EC recipients (key agreement), RSASSA-PSS signatures, compressed data: the
message is stored as it came, with the reason among its problems.

Nothing here raises on hostile input: every failure is a problem noted on the message.
"""

from __future__ import annotations

import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message as EmailMessage
from email.parser import BytesParser

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_shared import cms
from mailintake_shared.db.bindings import private_key_binding
from mailintake_shared.db.models import Certificate, ConnectionCertificate
from mailintake_shared.events import SmimeInfo
from mailintake_shared.secretbox import SecretBox, SecretDecryptError

_MAX_HEADER_BLOCK = 256 * 1024
_LAYERS = 4  # signed inside encrypted inside signed …: deeper is refused
_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^(?![ \t])", re.MULTILINE)
_PKCS7 = re.compile(rb"pkcs7", re.IGNORECASE)


@dataclass(frozen=True)
class KeyPair:
    """One of the connection's certificates with its private key."""

    certificate_id: uuid.UUID
    name: str
    certificate: x509.Certificate
    private_key: PrivateKeyTypes


@dataclass(frozen=True)
class Unwrapped:
    info: SmimeInfo
    mime: bytes | None  # the message with its S/MIME layers removed; None when unchanged


def is_smime(head: bytes) -> bool:
    """Whether a message's header block says S/MIME. Runs for every stored message: a byte
    search rules out nearly all of them before the header is parsed (every S/MIME type,
    and the signature protocol of multipart/signed, names pkcs7)."""
    end = _HEADER_END.search(head, 0, _MAX_HEADER_BLOCK)
    block = head[: end.start()] if end else head[:_MAX_HEADER_BLOCK]
    if not _PKCS7.search(block):
        return False
    message = BytesParser(policy=policy.compat32).parsebytes(block + b"\r\n\r\n", headersonly=True)
    kind = message.get_content_type()
    if kind == "multipart/signed":
        return (message.get_param("protocol") or "") in _SIGNATURE_TYPES
    return kind in _PKCS7_MIME


def unwrap_with(raw: bytes, keys: tuple[list[KeyPair], list[str]], now: datetime) -> Unwrapped:
    """``unwrap`` with what ``load_keys`` found; unusable certificates join the problem."""
    usable, unusable = keys
    result = unwrap(raw, usable, now)
    if result.info.problem is None or not unusable:
        return result
    problem = f"{result.info.problem}; {'; '.join(unusable)}"
    return Unwrapped(result.info.model_copy(update={"problem": problem}), result.mime)


def load_keys(
    session: Session, secrets: SecretBox, connection_id: uuid.UUID
) -> tuple[list[KeyPair], list[str]]:
    """The connection's certificates with their keys, and the problems of those unusable."""
    rows = session.scalars(
        select(Certificate)
        .join(ConnectionCertificate, ConnectionCertificate.certificate_id == Certificate.id)
        .where(ConnectionCertificate.connection_id == connection_id)
    )
    keys: list[KeyPair] = []
    problems: list[str] = []
    for row in rows:
        try:
            key_pem = secrets.decrypt(row.private_key_enc, private_key_binding(row))
            pem = key_pem.get_secret_value().encode("ascii")
            keys.append(
                KeyPair(
                    row.id,
                    row.name,
                    x509.load_pem_x509_certificate(row.certificate_pem.encode("ascii")),
                    serialization.load_pem_private_key(pem, None),
                )
            )
        except (SecretDecryptError, ValueError, TypeError) as exc:
            problems.append(f"certificate {row.name!r} is unusable ({type(exc).__name__})")
    return keys, problems


def unwrap(raw: bytes, keys: list[KeyPair], now: datetime) -> Unwrapped:
    """Remove the S/MIME layers the keys open; what was found goes in the info."""
    info = SmimeInfo()  # filled in layer by layer
    current = raw
    for _ in range(_LAYERS):
        # The header only: the body is split here by its boundary, never parsed as a tree.
        message = BytesParser(policy=policy.compat32).parsebytes(current, headersonly=True)
        kind = message.get_content_type()
        if kind == "multipart/signed":
            _verify_detached(current, message, info, now)
            break
        if kind not in _PKCS7_MIME:
            break
        if (message.get_param("smime-type") or "") == "enveloped-data":
            info.encrypted = True
        try:
            der = _base64_body(message)
            cms_type, inner_der = cms.content_type(der)
        except (cms.CorruptError, ValueError) as exc:
            info.problem = f"corrupt S/MIME body: {exc}"
            break
        if cms_type == cms.ENVELOPED_DATA:
            inner = _decrypt(der, inner_der, keys, info, now)
        elif cms_type == cms.SIGNED_DATA:
            inner = _verify_opaque(inner_der, info, now)
        else:
            info.problem = f"unsupported S/MIME content type {cms_type}"
            break
        if inner is None:
            break
        current = _with_outer_headers(current, inner)
    else:
        info.problem = f"more than {_LAYERS} S/MIME layers"
    return Unwrapped(info, None if current is raw else current)


def _base64_body(message: EmailMessage) -> bytes:
    payload = message.get_payload()
    if not isinstance(payload, str):
        raise ValueError("a multipart body where PKCS#7 data was expected")
    if (message.get("Content-Transfer-Encoding") or "").strip().lower() == "base64":
        try:
            return binascii.a2b_base64(payload.encode("ascii", "replace"))
        except binascii.Error as exc:
            raise ValueError(f"bad base64 ({exc})") from exc
    decoded = message.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else b""


def _decrypt(
    der: bytes, enveloped_der: bytes, keys: list[KeyPair], info: SmimeInfo, now: datetime
) -> bytes | None:
    info.encrypted = True
    try:
        recipients = cms.recipients(enveloped_der)
    except cms.CorruptError as exc:
        info.problem = f"corrupt envelope: {exc}"
        return None
    matching = [key for key in keys if _addressed_to(key.certificate, recipients)]
    if not matching:
        if any(r.kind == "key_agreement" for r in recipients):
            info.problem = (
                "encrypted for an EC key (key agreement), which is not supported; "
                "only RSA recipients can be decrypted"
            )
        else:
            info.problem = "no certificate of this connection matches the message's recipients"
        return None
    current = [key for key in matching if _valid_at(key.certificate, now)]
    if not current:
        key = matching[0]
        info.problem = (
            f"the matching certificate {key.name!r} expired on "
            f"{key.certificate.not_valid_after_utc:%Y-%m-%d}"
        )
        return None
    for key in current:
        if not isinstance(key.private_key, rsa.RSAPrivateKey):
            continue
        try:
            inner = pkcs7.pkcs7_decrypt_der(der, key.certificate, key.private_key, [])
        except (ValueError, TypeError) as exc:
            info.problem = f"corrupt envelope: {exc}"
            continue
        info.decrypted_with = key.certificate_id
        info.problem = None
        return inner
    if info.problem is None:
        info.problem = "the matching certificate's key is not an RSA key"
    return None


def _addressed_to(certificate: x509.Certificate, recipients: list[cms.Recipient]) -> bool:
    return any(
        r.serial == certificate.serial_number and r.issuer_der == certificate.issuer.public_bytes()
        for r in recipients
    )


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _verify_opaque(signed_der: bytes, info: SmimeInfo, now: datetime) -> bytes | None:
    try:
        signature = cms.verify(signed_der, None, now)
    except cms.CorruptError as exc:
        info.signature, info.problem = "invalid", f"corrupt signature: {exc}"
        return None
    _record(info, signature)
    return signature.content


def _verify_detached(raw: bytes, message: EmailMessage, info: SmimeInfo, now: datetime) -> None:
    boundary = message.get_boundary()
    parts = _multipart_bodies(raw, boundary) if boundary else []
    if len(parts) != 2:
        info.signature, info.problem = "invalid", "a multipart/signed must have exactly two parts"
        return
    signature_part = BytesParser(policy=policy.compat32).parsebytes(parts[1], headersonly=True)
    if signature_part.get_content_type() not in _SIGNATURE_TYPES:
        info.signature = "unverifiable"
        info.problem = f"unsupported signature type {signature_part.get_content_type()}"
        return
    try:
        signed_der = cms.content_type(_base64_body(signature_part))[1]
        signature = cms.verify(signed_der, _canonical(parts[0]), now)
    except (cms.CorruptError, ValueError) as exc:
        info.signature, info.problem = "invalid", f"corrupt signature: {exc}"
        return
    _record(info, signature)


def _record(info: SmimeInfo, signature: cms.Signature) -> None:
    info.signature = signature.status
    info.signer = signature.signer
    if signature.problem is not None:
        info.problem = signature.problem


def _multipart_bodies(raw: bytes, boundary: str) -> list[bytes]:
    """The exact bytes of each body part (RFC 2046: the CRLF before a delimiter is the
    delimiter's), which a detached signature covers byte for byte."""
    header_end = _HEADER_END.search(raw)
    body = raw[header_end.end() :] if header_end else b""
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*"
    )
    parts: list[bytes] = []
    start: int | None = None
    for found in delimiter.finditer(body):
        line_end = body.find(b"\n", found.end())
        if start is not None:
            parts.append(body[start : found.start()])
        if found.group(1) or line_end < 0 or len(parts) > 2:
            break
        start = line_end + 1
    return parts


def _canonical(entity: bytes) -> bytes:
    """Line ends as CRLF, as signed (a mailbox may store bare LF)."""
    return re.sub(rb"\r?\n", b"\r\n", entity)


def _with_outer_headers(outer: bytes, inner: bytes) -> bytes:
    """The inner entity under the outer message's headers (From, To, Subject …) minus the
    outer Content-* fields, which described the S/MIME layer just removed."""
    header_end = _HEADER_END.search(outer)
    head = outer[: header_end.start()] if header_end else outer
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    fields = [f for f in _FIELD_START.split(head) if f]
    kept = [f for f in fields if not f.lower().startswith(b"content-")]
    block = b"".join(f if f.endswith(b"\n") else f + newline for f in kept)
    return block + inner.lstrip(b"\r\n")
