"""Reading an uploaded certificate and key: either order in PEM, keys with a passphrase,
PKCS#12 files within a cap on the key-derivation rounds they ask for."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12
from pyasn1.codec.ber import decoder
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5652, rfc7292, rfc8018

from mailintake_config_api.certificates import CertificateError, read_upload
from mailintake_config_api.pkcs12_rounds import (
    MAX_ROUNDS,
    TooManyRoundsError,
    UnreadableError,
    check_rounds,
)
from tests.harness.smime import Identity, identity


def test_the_key_may_come_before_or_after_the_certificate() -> None:
    alice = identity("alice")
    for pem in (
        alice.certificate_pem + alice.key_pem("pass"),
        alice.key_pem("pass") + alice.certificate_pem,
    ):
        upload = read_upload(pem.decode(), None, "pass")
        assert upload.certificate == alice.certificate
        assert "PRIVATE KEY" in upload.private_key_pem


def test_no_key_a_wrong_passphrase_and_a_foreign_key_are_refused() -> None:
    alice, bob = identity("alice"), identity("bob", kind="ec")
    cases = {
        "no readable private key": (alice.certificate_pem.decode(), None),
        "passphrase": ((alice.certificate_pem + alice.key_pem("right")).decode(), "wrong"),
        "does not belong": ((alice.certificate_pem + bob.key_pem()).decode(), None),
    }
    for expected, (pem, passphrase) in cases.items():
        with pytest.raises(CertificateError, match=expected):
            read_upload(pem, None, passphrase)


def _pkcs12(
    alice: Identity, rounds: int, pbe: pkcs12.PBES = pkcs12.PBES.PBESv2SHA256AndAES256CBC
) -> bytes:
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(rounds)
        .key_cert_algorithm(pbe)
        .hmac_hash(hashes.SHA256())
        .build(b"pass")
    )
    return pkcs12.serialize_key_and_certificates(
        b"a", alice.key, alice.certificate, None, encryption
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "pbe", [pkcs12.PBES.PBESv2SHA256AndAES256CBC, pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC]
)
def test_pkcs12_files_are_read_within_the_rounds_cap(pbe: pkcs12.PBES) -> None:
    alice = identity("alice")
    upload = read_upload(None, _b64(_pkcs12(alice, 2048, pbe)), "pass")
    assert upload.certificate == alice.certificate
    # The certificate's part and the key at 10,000 each, and cryptography's MAC at 2,048.
    assert check_rounds(_pkcs12(alice, 10_000, pbe), "pass") == 2 * 10_000 + 2048


def test_a_pkcs12_file_asking_for_too_many_rounds_is_refused_before_any_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _pkcs12(identity("alice"), MAX_ROUNDS // 2)  # with the MAC's: over the cap in all

    def never(*_args: object) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(pkcs12, "load_key_and_certificates", never)
    with pytest.raises(CertificateError, match=f"at most {MAX_ROUNDS} are accepted"):
        read_upload(None, _b64(data), "pass")
    with pytest.raises(CertificateError, match="a wrong passphrase"):
        read_upload(None, _b64(_pkcs12(identity("bob"), 2048)), "wrong")


def test_rounds_hidden_inside_an_encrypted_part_are_counted() -> None:
    """A shrouded key asking for many rounds, inside a part encrypted with few: the part is
    opened (its rounds counted) and the key's rounds counted too, before anything is spent."""
    many = _decode(_pkcs12(identity("alice"), MAX_ROUNDS + 1), rfc7292.PFX())
    safe = _decode(
        _decode(many["authSafe"]["content"], univ.OctetString()), rfc7292.AuthenticatedSafe()
    )
    key_part = next(info for info in safe if info["contentType"] == rfc5652.id_data)
    hidden = bytes(_decode(key_part["content"], univ.OctetString()))  # SafeContents: the key bag
    cheap = _decode(
        _decode(_pkcs12(identity("bob"), 2048), rfc7292.PFX())["authSafe"]["content"],
        univ.OctetString(),
    )
    encrypted_part = next(
        info
        for info in _decode(cheap, rfc7292.AuthenticatedSafe())
        if info["contentType"] == rfc5652.id_encryptedData
    )
    # Re-encrypt the key's bag into bob's cheap part (same algorithm, passphrase "pass").
    data = _decode(encrypted_part["content"], rfc5652.EncryptedData())
    algorithm = data["encryptedContentInfo"]["contentEncryptionAlgorithm"]
    pbes2 = _decode(algorithm["parameters"], rfc8018.PBES2_params())
    kdf = _decode(pbes2["keyDerivationFunc"]["parameters"], rfc8018.PBKDF2_params())
    key = PBKDF2HMAC(
        hashes.SHA256(), 32, bytes(kdf["salt"]["specified"]), int(kdf["iterationCount"])
    ).derive(b"pass")
    iv = bytes(_decode(pbes2["encryptionScheme"]["parameters"], univ.OctetString()))
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padder.update(hidden) + padder.finalize()) + encryptor.finalize()
    data["encryptedContentInfo"]["encryptedContent"] = sealed
    encrypted_part["content"] = univ.Any(encoder.encode(data))
    outer = rfc7292.AuthenticatedSafe()
    outer.append(encrypted_part)
    pfx = rfc7292.PFX()
    pfx["version"] = 3
    pfx["authSafe"]["contentType"] = rfc5652.id_data
    pfx["authSafe"]["content"] = univ.Any(encoder.encode(univ.OctetString(encoder.encode(outer))))
    with pytest.raises(TooManyRoundsError):
        check_rounds(encoder.encode(pfx), "pass")
    with pytest.raises(UnreadableError):
        check_rounds(encoder.encode(pfx), "not the passphrase")


def _decode(data: object, spec: object) -> Any:
    value, _ = decoder.decode(bytes(data), asn1Spec=spec)  # type: ignore[call-overload]
    return value
