"""S/MIME (RFC 8551): decrypt enveloped mail with the connection's certificates, verify
signatures, through any nesting of the two (signed then encrypted is the usual).

Types: ``application/pkcs7-mime`` and ``application/x-pkcs7-mime`` (enveloped, authenticated
enveloped and signed data) and ``multipart/signed`` with a PKCS#7 signature. The CMS inside,
BER or DER, and the algorithms supported are ``cms``'s. A layer that cannot be opened (no
matching key, an expired certificate, a corrupt envelope, an algorithm not supported) leaves
the message as it came, with the reason in ``SmimeInfo.problem``.

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
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_shared import cms
from mailintake_shared.db.bindings import private_key_binding
from mailintake_shared.db.models import Certificate, ConnectionCertificate
from mailintake_shared.events import SmimeInfo
from mailintake_shared.rfc5322 import MAX_HEADER_BLOCK, header_end
from mailintake_shared.secretbox import SecretBox, SecretDecryptError

_LAYERS = 4  # signed inside encrypted inside signed …: deeper is refused
_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_FIELD_START = re.compile(rb"^(?![ \t])", re.MULTILINE)
_PKCS7 = re.compile(rb"pkcs7", re.IGNORECASE)
_ENCRYPTED_TYPES = ("enveloped-data", "authenveloped-data")  # RFC 8551 §3.2.2
_OTHER_RECIPIENTS = {"kek": "pre-shared key", "password": "password", "other": "other means"}
_RANK = {"valid": 0, "unverifiable": 1, "invalid": 2}


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
    end = header_end(head)
    block = head[: end[0]] if end else head[:MAX_HEADER_BLOCK]
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
            inner = _verify_detached(current, message, info, now)
        elif kind in _PKCS7_MIME:
            inner = _open(message, keys, info, now)
        else:
            break
        if inner is None:
            break
        current = _with_outer_headers(current, inner)
    else:
        _note(info, f"more than {_LAYERS} S/MIME layers")
    return Unwrapped(info, None if current is raw else current)


def _note(info: SmimeInfo, problem: str) -> None:
    info.problem = problem if info.problem is None else f"{info.problem}; {problem}"


def _open(
    message: EmailMessage, keys: list[KeyPair], info: SmimeInfo, now: datetime
) -> bytes | None:
    """The content inside an ``application/pkcs7-mime`` layer, or None when it stays shut."""
    smime_type = message.get_param("smime-type")
    if isinstance(smime_type, str) and smime_type.lower() in _ENCRYPTED_TYPES:
        info.encrypted = True
    try:
        content = cms.read(_base64_body(message))
    except ValueError as exc:
        _note(info, f"corrupt S/MIME body: {exc}")
        return None
    if content.kind == "enveloped":
        return _decrypt(content, keys, info, now)
    if content.kind == "signed":
        return _verify(content, None, info, now)
    _note(info, f"unsupported S/MIME content type {content.kind}")
    return None


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
    content: cms.Content, keys: list[KeyPair], info: SmimeInfo, now: datetime
) -> bytes | None:
    info.encrypted = True
    try:
        recipients = cms.recipients(content)
    except cms.CorruptError as exc:
        _note(info, f"corrupt envelope: {exc}")
        return None
    matching = [(k, r) for k in keys for r in recipients if r.is_for(k.certificate)]
    if not matching:
        problem = "no certificate of this connection matches the message's recipients"
        others = sorted({r.kind for r in recipients if r.kind in _OTHER_RECIPIENTS})
        if others:
            kinds = ", ".join(_OTHER_RECIPIENTS[kind] for kind in others)
            problem += f"; not supported: recipients by {kinds}"
        _note(info, problem)
        return None
    current = [(k, r) for k, r in matching if _valid_at(k.certificate, now)]
    if not current:
        key = matching[0][0]
        expired = key.certificate.not_valid_after_utc
        _note(info, f"the matching certificate {key.name!r} expired on {expired:%Y-%m-%d}")
        return None
    failures: list[str] = []
    for key, recipient in current:
        try:
            inner = cms.decrypt(content, recipient, key.private_key)
        except cms.UnsupportedError as exc:
            failures.append(f"not supported: {exc}")
            continue
        except cms.CorruptError as exc:
            failures.append(f"corrupt envelope: {exc}")
            continue
        info.decrypted_with = key.certificate_id
        return inner
    _note(info, "; ".join(dict.fromkeys(failures)))
    return None


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _verify(
    content: cms.Content, detached: bytes | None, info: SmimeInfo, now: datetime
) -> bytes | None:
    """Check a signature and record it; an opaque signature's content, else None."""
    try:
        signature = cms.verify(content, detached, now)
    except cms.CorruptError as exc:
        signature = cms.Signature("invalid", problem=f"corrupt signature: {exc}")
    _record(info, signature)
    return signature.content


def _record(info: SmimeInfo, signature: cms.Signature) -> None:
    """Of nested signatures the worst counts; of equals, the inner one (the content's
    author's)."""
    if info.signature is None or _RANK[signature.status] >= _RANK[info.signature]:
        info.signature, info.signer = signature.status, signature.signer
    if signature.problem is not None:
        _note(info, signature.problem)


def _verify_detached(
    raw: bytes, message: EmailMessage, info: SmimeInfo, now: datetime
) -> bytes | None:
    """Check a ``multipart/signed``; its signed part when that is S/MIME too, else None."""
    boundary = message.get_boundary()
    parts = _multipart_bodies(raw, boundary) if boundary else []
    if len(parts) != 2:
        problem = "a multipart/signed must have exactly two parts"
        _record(info, cms.Signature("invalid", problem=problem))
        return None
    signature_part = BytesParser(policy=policy.compat32).parsebytes(parts[1], headersonly=True)
    if signature_part.get_content_type() not in _SIGNATURE_TYPES:
        problem = f"unsupported signature type {signature_part.get_content_type()}"
        _record(info, cms.Signature("unverifiable", problem=problem))
        return None
    try:
        content = cms.read(_base64_body(signature_part))
    except ValueError as exc:
        _record(info, cms.Signature("invalid", problem=f"corrupt signature: {exc}"))
        return None
    if content.kind != "signed":
        problem = f"the signature part holds {content.kind}, not signed data"
        _record(info, cms.Signature("invalid", problem=problem))
        return None
    _verify(content, _canonical(parts[0]), info, now)
    return parts[0] if is_smime(parts[0]) else None


def _multipart_bodies(raw: bytes, boundary: str) -> list[bytes]:
    """The exact bytes of each body part (RFC 2046: the CRLF before a delimiter is the
    delimiter's), which a detached signature covers byte for byte."""
    blank = header_end(raw, len(raw))
    body = raw[blank[1] :] if blank else b""
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
    blank = header_end(outer, len(outer))
    head = outer[: blank[0]] if blank else outer
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    fields = [f for f in _FIELD_START.split(head) if f]
    kept = [f for f in fields if not f.lower().startswith(b"content-")]
    block = b"".join(f if f.endswith(b"\n") else f + newline for f in kept)
    return block + inner.lstrip(b"\r\n")
