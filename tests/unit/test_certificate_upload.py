"""Reading an uploaded certificate and key: either order in PEM, keys with a passphrase,
PKCS#12 files within a cap on the key-derivation rounds they ask for."""

from __future__ import annotations

import base64

import pytest
from asn1crypto import cms
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12

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
    many = asn1_pkcs12.Pfx.load(_pkcs12(identity("alice"), MAX_ROUNDS + 1))
    key_part = next(i for i in many.authenticated_safe if i["content_type"].native == "data")
    hidden: bytes = key_part["content"].native  # the SafeContents that holds the key's bag
    cheap = asn1_pkcs12.Pfx.load(_pkcs12(identity("bob"), 2048))
    part = next(i for i in cheap.authenticated_safe if i["content_type"].native != "data")
    algorithm = part["content"]["encrypted_content_info"]["content_encryption_algorithm"]
    key = PBKDF2HMAC(hashes.SHA256(), 32, algorithm.kdf_salt, algorithm.kdf_iterations).derive(
        b"pass"
    )
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(algorithm.encryption_iv)).encryptor()
    sealed = encryptor.update(padder.update(hidden) + padder.finalize()) + encryptor.finalize()
    encrypted = cms.EncryptedData(
        {
            "version": "v0",
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": algorithm,
                "encrypted_content": sealed,
            },
        }
    )
    outer = asn1_pkcs12.AuthenticatedSafe(
        [cms.ContentInfo({"content_type": "encrypted_data", "content": encrypted})]
    )
    pfx = asn1_pkcs12.Pfx(
        {"version": "v3", "auth_safe": {"content_type": "data", "content": outer.dump()}}
    )
    with pytest.raises(TooManyRoundsError):
        check_rounds(pfx.dump(), "pass")
    with pytest.raises(UnreadableError):
        check_rounds(pfx.dump(), "not the passphrase")
