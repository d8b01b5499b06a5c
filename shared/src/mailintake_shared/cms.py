"""CMS (RFC 5652) as S/MIME (RFC 8551) uses it: read a ContentInfo, open an EnvelopedData or
an AuthEnvelopedData (RFC 5083) with a recipient's private key, verify a SignedData.

Parsing is asn1crypto's ``cms`` module, which reads BER, indefinite lengths included (as NSS,
and so Thunderbird, writes CMS), as well as DER; the algorithms are pyca/cryptography's:

- content encryption: AES-128/192/256 in CBC (RFC 3565) and GCM (RFC 5084), 3DES-CBC;
- key transport: RSA with PKCS#1 v1.5 or OAEP (RFC 8017, parameters of RFC 4055);
- key agreement: ECDH, standard and cofactor, with the X9.63 KDF over SHA-1 to SHA-512 and AES
  key wrap (RFC 5753, RFC 3394);
- digests SHA-1, SHA-224, SHA-256, SHA-384, SHA-512; signatures RSA PKCS#1 v1.5, RSASSA-PSS
  (RFC 4056) and ECDSA (RFC 5753).

Anything else raises ``UnsupportedError`` naming it. What a signature check covers: the
content's digest against the signed ``messageDigest`` attribute, and the signature with the
signer certificate carried in the message; not the certificate's chain of trust (there are
no trust anchors to check it against), nor revocation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CBC = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32, "tripledes_3key": 24}
_GCM = {"aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32}
_KEY_WRAP = {"aes128_wrap": 16, "aes192_wrap": 24, "aes256_wrap": 32}
# ECDH key agreement schemes (RFC 5753 §7.1.4, SEC 1): OID → the X9.63 KDF's hash.
_ECDH = {
    "1.3.133.16.840.63.0.2": "sha1",  # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.133.16.840.63.0.3": "sha1",  # dhSinglePass-cofactorDH-sha1kdf-scheme
    **{f"1.3.132.1.11.{n}": h for n, h in enumerate(("sha224", "sha256", "sha384", "sha512"))},
    **{f"1.3.132.1.14.{n}": h for n, h in enumerate(("sha224", "sha256", "sha384", "sha512"))},
}


class CorruptError(ValueError):
    """The bytes are not the CMS structure they claim to be, or do not decrypt."""


class UnsupportedError(ValueError):
    """An algorithm or a kind of recipient that is not implemented; the message names it."""


class _GcmParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 §3.2 (asn1crypto reads CCM's, not GCM's, with its default tag length)."""

    _fields = [("nonce", core.OctetString), ("icv_len", core.Integer, {"default": 12})]


class _SharedInfo(core.Sequence):  # type: ignore[misc]
    """ECC-CMS-SharedInfo (RFC 5753 §7.2): the X9.63 KDF's shared info."""

    _fields = [
        ("key_info", core.Any),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


@contextmanager
def _reading() -> Iterator[None]:
    """asn1crypto parses lazily: a damaged structure can raise on any access."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        if isinstance(exc, CorruptError | UnsupportedError):
            raise
        raise CorruptError(f"unreadable CMS structure ({type(exc).__name__})") from exc


def _name(algorithm: Any) -> str:
    """An algorithm identifier's name, with its OID when asn1crypto knows a name."""
    oid = algorithm["algorithm"]
    return oid.dotted if oid.native == oid.dotted else f"{oid.native} ({oid.dotted})"


@dataclass(frozen=True)
class Content:
    """A parsed ContentInfo. ``kind`` is ``enveloped`` (EnvelopedData or AuthEnvelopedData),
    ``signed`` (SignedData) or the content type's name (or OID) for anything else."""

    kind: str
    _info: Any


def read(der: bytes) -> Content:
    """Parse a ContentInfo (BER or DER). Raises ``CorruptError``."""
    with _reading():
        info = cms.ContentInfo.load(der, strict=True)
        name = info["content_type"].native
    kinds = {
        "enveloped_data": "enveloped",
        "authenticated_enveloped_data": "enveloped",
        "signed_data": "signed",
    }
    return Content(kinds.get(name, name), info)


def _present(value: Any) -> bool:
    """Whether an OPTIONAL field is there (asn1crypto gives a Void for one that is not)."""
    return not isinstance(value, core.Void)


def _identifier(name: Any) -> tuple[int | None, bytes | None, bytes | None]:
    """A RecipientIdentifier, KeyAgreeRecipientIdentifier or SignerIdentifier as (serial,
    issuer DER) or (subject key identifier): the two ways CMS names a certificate."""
    if name.name == "issuer_and_serial_number":
        return name.chosen["serial_number"].native, name.chosen["issuer"].dump(), None
    key_id = name.chosen["subject_key_identifier"] if name.name == "r_key_id" else name.chosen
    return None, None, key_id.native


def _names(
    certificate: x509.Certificate, serial: int | None, issuer: bytes | None, key_id: bytes | None
) -> bool:
    if serial is not None:
        return serial == certificate.serial_number and issuer == certificate.issuer.public_bytes()
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return False
    return key_id is not None and ski.value.digest == key_id


@dataclass(frozen=True)
class Recipient:
    """One recipient of an enveloped message, named by issuer and serial or by subject key
    identifier (all None for a password or a pre-shared key); ``at`` locates it: its
    RecipientInfo, and the key within a key agreement."""

    kind: Literal["key_transport", "key_agreement", "kek", "password", "other"]
    serial: int | None
    issuer_der: bytes | None
    key_id: bytes | None
    at: tuple[int, int]

    def is_for(self, certificate: x509.Certificate) -> bool:
        """Whether ``certificate`` is the one this recipient names."""
        return _names(certificate, self.serial, self.issuer_der, self.key_id)


def recipients(content: Content) -> list[Recipient]:
    """Who an enveloped message is encrypted for. Raises ``CorruptError``."""
    found: list[Recipient] = []
    with _reading():
        for index, info in enumerate(content._info["content"]["recipient_infos"]):
            if info.name == "ktri":
                named = _identifier(info.chosen["rid"])
                found.append(Recipient("key_transport", *named, (index, 0)))
            elif info.name == "kari":
                for key, encrypted in enumerate(info.chosen["recipient_encrypted_keys"]):
                    named = _identifier(encrypted["rid"])
                    found.append(Recipient("key_agreement", *named, (index, key)))
            elif info.name == "kekri":
                found.append(Recipient("kek", None, None, None, (index, 0)))
            elif info.name == "pwri":
                found.append(Recipient("password", None, None, None, (index, 0)))
            else:
                found.append(Recipient("other", None, None, None, (index, 0)))
    return found


def decrypt(content: Content, recipient: Recipient, key: PrivateKeyTypes) -> bytes:
    """The plaintext of an enveloped message, opened with ``recipient``'s private ``key``.
    Raises ``CorruptError`` (damaged, or not that key) or ``UnsupportedError``."""
    with _reading():
        enveloped = content._info["content"]
        info = enveloped["recipient_infos"][recipient.at[0]]
        if info.name == "ktri":
            cek = _transported_key(info.chosen, key)
        elif info.name == "kari":
            cek = _agreed_key(info.chosen, recipient.at[1], key)
        else:
            raise UnsupportedError(f"recipients of kind {info.name}")
        if content._info["content_type"].native == "authenticated_enveloped_data":
            return _open_gcm(enveloped, cek)
        return _open_cbc(enveloped["encrypted_content_info"], cek)


def _transported_key(info: Any, key: PrivateKeyTypes) -> bytes:
    """RFC 5652 §6.2.1 with RSA: PKCS#1 v1.5 or OAEP."""
    algorithm = info["key_encryption_algorithm"]
    name = algorithm["algorithm"].native
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnsupportedError(f"key transport {name} with a {type(key).__name__}")
    if name == "rsaes_pkcs1v15":
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
    elif name == "rsaes_oaep":
        parameters = algorithm["parameters"]
        mgf = parameters["mask_gen_algorithm"]
        if mgf["algorithm"].native != "mgf1":
            raise UnsupportedError(f"OAEP with mask generation {_name(mgf)}")
        label = parameters["p_source_algorithm"]["parameters"].native
        scheme = padding.OAEP(
            padding.MGF1(_hash(mgf["parameters"])),
            _hash(parameters["hash_algorithm"]),
            label or None,
        )
    else:
        raise UnsupportedError(f"key transport {_name(algorithm)}")
    try:
        return key.decrypt(info["encrypted_key"].native, scheme)
    except ValueError as exc:
        raise CorruptError("the content key does not decrypt with this private key") from exc


def _agreed_key(info: Any, index: int, key: PrivateKeyTypes) -> bytes:
    """RFC 5753 §3.1.2: ECDH with the originator's ephemeral key, the X9.63 KDF over
    ECC-CMS-SharedInfo, then AES key unwrap (RFC 3394)."""
    algorithm = info["key_encryption_algorithm"]
    kdf_hash = _ECDH.get(algorithm["algorithm"].dotted)
    if kdf_hash is None:
        raise UnsupportedError(f"key agreement {_name(algorithm)}")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UnsupportedError(f"ECDH key agreement with a {type(key).__name__}")
    if info["originator"].name != "originator_key":
        raise UnsupportedError("ECDH with an originator named by certificate (static-static)")
    wrap = cms.KeyEncryptionAlgorithm.load(algorithm["parameters"].dump())
    wrap_length = _KEY_WRAP.get(wrap["algorithm"].native)
    if wrap_length is None:
        raise UnsupportedError(f"key wrap {_name(wrap)}")
    point = info["originator"].chosen["public_key"].native
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    except ValueError as exc:
        raise CorruptError("the originator's key is not a point of the recipient's curve") from exc
    ukm = info["ukm"].native
    shared_info = _SharedInfo(
        {
            "key_info": core.Any.load(wrap.dump()),
            "entity_u_info": ukm,
            "supp_pub_info": (wrap_length * 8).to_bytes(4, "big"),
        }
    ).dump()
    kek = X963KDF(_HASHES[kdf_hash](), wrap_length, shared_info).derive(
        key.exchange(ec.ECDH(), peer)
    )
    encrypted = info["recipient_encrypted_keys"][index]["encrypted_key"].native
    try:
        return keywrap.aes_key_unwrap(kek, encrypted)
    except keywrap.InvalidUnwrap as exc:
        raise CorruptError("the content key does not unwrap with this private key") from exc


def _cipher_key(name: str, sizes: dict[str, int], key: bytes) -> BlockCipherAlgorithm:
    if len(key) != sizes[name]:
        raise CorruptError(f"a {len(key)}-byte key for {name}")
    return TripleDES(key) if name == "tripledes_3key" else algorithms.AES(key)


def _open_cbc(encrypted_info: Any, key: bytes) -> bytes:
    algorithm = encrypted_info["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    if name not in _CBC:
        raise UnsupportedError(f"content encryption {_name(algorithm)}")
    cipher = _cipher_key(name, _CBC, key)
    iv = algorithm["parameters"].native
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    padded = decryptor.update(_ciphertext(encrypted_info)) + decryptor.finalize()
    unpadder = block_padding.PKCS7(cipher.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CorruptError("the content does not decrypt (bad padding)") from exc


def _open_gcm(enveloped: Any, key: bytes) -> bytes:
    """RFC 5083 §2.1 and RFC 5084 §3: the tag is ``mac``; the authenticated attributes,
    when present, are the additional data (DER with the SET OF tag)."""
    encrypted_info = enveloped["auth_encrypted_content_info"]
    algorithm = encrypted_info["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    if name not in _GCM:
        raise UnsupportedError(f"authenticated content encryption {_name(algorithm)}")
    parameters = _GcmParameters.load(algorithm["parameters"].dump())
    tag = enveloped["mac"].native
    if len(tag) != parameters["icv_len"].native:
        raise CorruptError("the authentication tag's length differs from the announced one")
    mode = modes.GCM(parameters["nonce"].native, tag, min_tag_length=12)  # RFC 5084 §3.1
    decryptor = Cipher(_cipher_key(name, _GCM, key), mode).decryptor()
    attributes = enveloped["auth_attrs"]
    if _present(attributes):
        decryptor.authenticate_additional_data(b"\x31" + attributes.dump()[1:])
    plain = decryptor.update(_ciphertext(encrypted_info))
    try:
        return plain + decryptor.finalize()
    except InvalidTag as exc:
        raise CorruptError("the content does not match its authentication tag") from exc


def _ciphertext(encrypted_info: Any) -> bytes:
    content = encrypted_info["encrypted_content"].native
    if content is None:
        raise UnsupportedError("enveloped data with the content outside the message")
    return bytes(content)


def _hash(algorithm: Any) -> hashes.HashAlgorithm:
    hash_type = _HASHES.get(algorithm["algorithm"].native)
    if hash_type is None:
        raise UnsupportedError(f"digest {_name(algorithm)}")
    return hash_type()


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


def verify(content: Content, detached: bytes | None, now: datetime) -> Signature:
    """Check a SignedData (the content inside it, or ``detached``) with its first signer
    (RFC 5652 §5.6). Raises ``CorruptError``."""
    with _reading():
        return _verify(content._info["content"], detached, now)


def _verify(signed: Any, detached: bytes | None, now: datetime) -> Signature:
    embedded = signed["encap_content_info"]["content"].native
    opaque = None if embedded is None else bytes(embedded)
    data = detached if opaque is None else opaque
    if data is None:
        return Signature("unverifiable", problem="the signed content is missing")
    if not signed["signer_infos"]:
        return Signature("unverifiable", problem="no signer", content=opaque)
    signer_info = signed["signer_infos"][0]
    certificate = _signer_certificate(signed, signer_info["sid"])
    if certificate is None:
        missing = "the signer's certificate is not in the message"
        return Signature("unverifiable", problem=missing, content=opaque)
    signer = signer_name(certificate)
    try:
        hash_type = _hash(signer_info["digest_algorithm"])
        attributes = signer_info["signed_attrs"]
        if _present(attributes):
            digest = hashes.Hash(hash_type)
            digest.update(data)
            if _message_digest(attributes) != digest.finalize():
                problem = "the content does not match its signature (digest differs)"
                return Signature("invalid", signer, problem, opaque)
            # The signature covers the attributes' DER with the SET OF tag, not the [0] one.
            data = b"\x31" + attributes.dump()[1:]
            mismatch = "the signature over the signed attributes does not match the signer's key"
        else:
            mismatch = "the signature does not match the content and the signer's key"
        _check(certificate, signer_info, hash_type, data)
    except UnsupportedError as exc:
        return Signature("unverifiable", signer, f"not supported: {exc}", opaque)
    except InvalidSignature:
        return Signature("invalid", signer, mismatch, opaque)
    if certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return Signature("valid", signer, None, opaque)
    outside = (
        "the signer's certificate is outside its validity "
        f"({certificate.not_valid_before_utc:%Y-%m-%d} to "
        f"{certificate.not_valid_after_utc:%Y-%m-%d})"
    )
    return Signature("valid", signer, outside, opaque)


def _signer_certificate(signed: Any, sid: Any) -> x509.Certificate | None:
    named = _identifier(sid)
    for choice in signed["certificates"] if _present(signed["certificates"]) else []:
        if choice.name != "certificate":
            continue
        try:
            certificate = x509.load_der_x509_certificate(choice.chosen.dump())
        except ValueError:
            continue
        if _names(certificate, *named):
            return certificate
    return None


def _message_digest(attributes: Any) -> bytes | None:
    for attribute in attributes:
        if attribute["type"].native == "message_digest" and attribute["values"]:
            return bytes(attribute["values"][0].native)
    return None


def _check(
    certificate: x509.Certificate,
    signer_info: Any,
    hash_type: hashes.HashAlgorithm,
    data: bytes,
) -> None:
    """Raises ``InvalidSignature`` when the signature does not match, ``UnsupportedError``
    for an algorithm not implemented."""
    algorithm = signer_info["signature_algorithm"]
    try:
        kind = algorithm.signature_algo
    except ValueError:
        raise UnsupportedError(f"signature {_name(algorithm)}") from None
    key = certificate.public_key()
    signature = signer_info["signature"].native
    if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hash_type)
    elif kind == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
        parameters = algorithm["parameters"]
        mgf = parameters["mask_gen_algorithm"]
        if mgf["algorithm"].native != "mgf1":
            raise UnsupportedError(f"RSASSA-PSS with mask generation {_name(mgf)}")
        scheme = padding.PSS(
            padding.MGF1(_hash(mgf["parameters"])), parameters["salt_length"].native
        )
        key.verify(signature, data, scheme, _hash(parameters["hash_algorithm"]))
    elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hash_type))
    else:
        raise UnsupportedError(f"{kind} signatures with a {type(key).__name__}")
