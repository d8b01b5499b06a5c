"""The parts of CMS (RFC 5652) that S/MIME needs beyond what ``cryptography`` offers:
reading a ContentInfo's type, listing an enveloped message's recipients, and verifying a
SignedData signature (``cryptography`` signs PKCS#7 but does not verify it).

Parsing is ``pyasn1`` with the RFC 5652 module of ``pyasn1-modules``; the signature check is
``cryptography``'s. What is checked: the content's digest against the signed
``messageDigest`` attribute, and the signature over the signed attributes (or the content)
with the signer certificate carried in the message. What is not: the signer certificate's
chain of trust (there are no trust anchors to check it against), nor revocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc5652

SIGNED_DATA = str(rfc5652.id_signedData)
ENVELOPED_DATA = str(rfc5652.id_envelopedData)
_RSASSA_PSS = "1.2.840.113549.1.1.10"
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}


class CorruptError(ValueError):
    """The DER is not the CMS structure it claims to be."""


def _decode(der: bytes, spec: Any) -> Any:
    try:
        value, rest = decoder.decode(der, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, RecursionError) as exc:
        raise CorruptError(f"unreadable CMS structure ({type(exc).__name__})") from exc
    if rest:
        raise CorruptError("trailing bytes after the CMS structure")
    return value


def content_type(der: bytes) -> tuple[str, bytes]:
    """The ContentInfo's type (an OID) and its content's DER."""
    info = _decode(der, rfc5652.ContentInfo())
    return str(info["contentType"]), bytes(info["content"])


@dataclass(frozen=True)
class Recipient:
    kind: Literal["key_transport", "key_agreement", "other"]
    serial: int | None  # the recipient certificate's serial, when named by issuer and serial
    issuer_der: bytes | None


def recipients(enveloped_der: bytes) -> list[Recipient]:
    """Who an EnvelopedData is encrypted for."""
    enveloped = _decode(enveloped_der, rfc5652.EnvelopedData())
    found: list[Recipient] = []
    for info in enveloped["recipientInfos"]:
        name = info.getName()
        if name == "ktri":
            rid = info["ktri"]["rid"]
            if rid.getName() == "issuerAndSerialNumber":
                named = rid["issuerAndSerialNumber"]
                found.append(
                    Recipient(
                        "key_transport", int(named["serialNumber"]), encoder.encode(named["issuer"])
                    )
                )
            else:
                found.append(Recipient("key_transport", None, None))
        elif name == "kari":
            found.append(Recipient("key_agreement", None, None))
        else:
            found.append(Recipient("other", None, None))
    return found


@dataclass(frozen=True)
class Signature:
    status: Literal["valid", "invalid", "unverifiable"]
    signer: str | None = None
    problem: str | None = None
    content: bytes | None = None  # the signed content of an opaque (enveloping) signature


def signer_name(certificate: x509.Certificate) -> str:
    """The signer's e-mail address when the certificate names one, else its subject."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        emails = names.value.get_values_for_type(x509.RFC822Name)
        if emails:
            return emails[0]
    except x509.ExtensionNotFound:
        pass
    attributes = certificate.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
    if attributes:
        return str(attributes[0].value)
    return certificate.subject.rfc4514_string()


def verify(signed_der: bytes, detached: bytes | None, now: datetime) -> Signature:
    """Check a SignedData (the content inside it, or ``detached``) with its first signer."""
    signed = _decode(signed_der, rfc5652.SignedData())
    embedded = signed["encapContentInfo"]["eContent"]
    content = bytes(embedded) if embedded.isValue else detached
    if content is None:
        return Signature("unverifiable", problem="the signed content is missing")
    opaque = content if embedded.isValue else None
    if not signed["signerInfos"]:
        return Signature("unverifiable", problem="no signer", content=opaque)
    signer_info = signed["signerInfos"][0]
    certificate = _signer_certificate(signed, signer_info)
    if certificate is None:
        missing = "the signer's certificate is not in the message"
        return Signature("unverifiable", problem=missing, content=opaque)
    signer = signer_name(certificate)
    digest_oid = str(signer_info["digestAlgorithm"]["algorithm"])
    hash_type = _HASHES.get(digest_oid)
    if hash_type is None:
        problem = f"unsupported digest algorithm {digest_oid}"
        return Signature("unverifiable", signer, problem, opaque)
    digest = hashes.Hash(hash_type())
    digest.update(content)
    content_digest = digest.finalize()
    signed_attrs = signer_info["signedAttrs"]
    if signed_attrs.isValue:
        announced = _message_digest(signed_attrs)
        if announced != content_digest:
            problem = "the content does not match its signature (digest differs)"
            return Signature("invalid", signer, problem, opaque)
        # The signature covers the attributes' DER with the SET OF tag, not the [0] one.
        data = b"\x31" + encoder.encode(signed_attrs)[1:]
    else:
        data = content
    outcome = _check(certificate, signer_info, bytes(signer_info["signature"]), data, hash_type)
    if outcome is not None:
        return Signature(outcome[0], signer, outcome[1], opaque)
    if certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return Signature("valid", signer, None, opaque)
    outside = (
        "the signer's certificate is outside its validity "
        f"({certificate.not_valid_before_utc:%Y-%m-%d} to "
        f"{certificate.not_valid_after_utc:%Y-%m-%d})"
    )
    return Signature("valid", signer, outside, opaque)


def _signer_certificate(signed: Any, signer_info: Any) -> x509.Certificate | None:
    carried = []
    for choice in signed["certificates"] if signed["certificates"].isValue else []:
        if choice.getName() == "certificate":
            try:
                carried.append(x509.load_der_x509_certificate(encoder.encode(choice[0])))
            except ValueError:
                continue
    sid = signer_info["sid"]
    if sid.getName() == "issuerAndSerialNumber":
        serial = int(sid["issuerAndSerialNumber"]["serialNumber"])
        issuer = encoder.encode(sid["issuerAndSerialNumber"]["issuer"])
        for certificate in carried:
            if certificate.serial_number == serial and certificate.issuer.public_bytes() == issuer:
                return certificate
        return None
    key_id = bytes(sid["subjectKeyIdentifier"])
    for certificate in carried:
        try:
            ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            continue
        if ski.value.digest == key_id:
            return certificate
    return None


def _message_digest(signed_attrs: Any) -> bytes | None:
    for attribute in signed_attrs:
        if attribute["attrType"] == rfc5652.id_messageDigest and attribute["attrValues"]:
            value = _decode(bytes(attribute["attrValues"][0]), rfc5652.MessageDigest())
            return bytes(value)
    return None


def _check(
    certificate: x509.Certificate,
    signer_info: Any,
    signature: bytes,
    data: bytes,
    hash_type: type[hashes.HashAlgorithm],
) -> tuple[Literal["invalid", "unverifiable"], str] | None:
    """None when the signature is good; else the status and why."""
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if str(signer_info["signatureAlgorithm"]["algorithm"]) == _RSASSA_PSS:
                return "unverifiable", "RSASSA-PSS signatures are not supported"
            key.verify(signature, data, padding.PKCS1v15(), hash_type())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_type()))
        else:
            return "unverifiable", f"unsupported signer key type {type(key).__name__}"
    except InvalidSignature:
        return "invalid", "the signature does not match the signer's key"
    except UnsupportedAlgorithm as exc:
        return "unverifiable", f"unsupported algorithm: {exc}"
    return None
