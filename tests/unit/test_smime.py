"""S/MIME unwrapping on messages made by ``openssl``: each case ends in its documented state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email import message_from_bytes

import pytest

from mailintake_shared.smime import KeyPair, is_smime, unwrap
from tests.harness.smime import INNER, Identity, Smime, corrupt_envelope, identity, tamper

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def alice() -> Identity:
    return identity("alice")


@pytest.fixture(scope="module")
def bob() -> Identity:
    return identity("bob")


@pytest.fixture(scope="module")
def eve_ec() -> Identity:
    return identity("eve", kind="ec")


@pytest.fixture(scope="module")
def smime() -> Smime:
    return Smime()


def pair(who: Identity) -> KeyPair:
    return KeyPair(uuid.uuid4(), who.name, who.certificate, who.key)


def body_of(mime: bytes) -> bytes:
    payload = message_from_bytes(mime).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_rsa_enveloped_mail_is_decrypted_under_its_own_headers(
    smime: Smime, alice: Identity, bob: Identity
) -> None:
    raw = smime.encrypt(INNER, alice, "numbers")
    assert b"quarterly" not in raw
    key = pair(alice)
    result = unwrap(raw, [pair(bob), key], NOW)
    assert result.info.encrypted
    assert result.info.decrypted_with == key.certificate_id
    assert result.info.problem is None
    assert result.info.signature is None
    assert result.mime is not None
    decrypted = message_from_bytes(result.mime)
    assert decrypted["Subject"] == "numbers"
    assert decrypted["From"] == "sender@example.test"
    assert decrypted.get_content_type() == "text/plain"
    assert b"quarterly numbers" in body_of(result.mime)


def test_pkcs7_mime_is_the_same_as_x_pkcs7_mime(smime: Smime, alice: Identity) -> None:
    raw = smime.encrypt(INNER, alice, "newer client")  # openssl smime writes the x- variant
    assert b"application/x-pkcs7-mime" in raw
    variant = raw.replace(b"application/x-pkcs7-mime", b"application/pkcs7-mime")
    result = unwrap(variant, [pair(alice)], NOW)
    assert result.info.decrypted_with is not None
    assert result.mime is not None


def test_detached_signature_is_verified_and_the_mail_left_as_it_is(
    smime: Smime, alice: Identity
) -> None:
    raw = smime.sign(INNER, alice, "signed")
    result = unwrap(raw, [], NOW)
    assert result.info.signature == "valid"
    assert result.info.signer == "alice@example.test"
    assert result.info.problem is None
    assert not result.info.encrypted
    assert result.mime is None  # readable as it is: nothing to unwrap


def test_a_changed_signed_body_is_an_invalid_signature(smime: Smime, alice: Identity) -> None:
    raw = tamper(smime.sign(INNER, alice, "signed"), b"quarterly", b"QUARTERLY")
    result = unwrap(raw, [], NOW)
    assert result.info.signature == "invalid"
    assert result.info.problem is not None
    assert "digest" in result.info.problem


def test_opaque_signature_with_an_ec_signer_is_unwrapped(smime: Smime, eve_ec: Identity) -> None:
    raw = smime.sign(INNER, eve_ec, "opaque", opaque=True)
    result = unwrap(raw, [], NOW)
    assert result.info.signature == "valid"
    assert result.info.signer == "eve@example.test"
    assert result.mime is not None
    assert b"quarterly numbers" in body_of(result.mime)


def test_signed_then_encrypted_is_decrypted_and_verified(
    smime: Smime, alice: Identity, bob: Identity
) -> None:
    raw = smime.sign_then_encrypt(INNER, bob, alice, "both")
    result = unwrap(raw, [pair(alice)], NOW)
    assert result.info.encrypted
    assert result.info.decrypted_with is not None
    assert result.info.signature == "valid"
    assert result.info.signer == "bob@example.test"
    assert result.mime is not None
    assert message_from_bytes(result.mime).get_content_type() == "multipart/signed"


def test_without_the_recipients_key_the_mail_stays_encrypted(
    smime: Smime, alice: Identity, bob: Identity
) -> None:
    result = unwrap(smime.encrypt(INNER, alice, "not for bob"), [pair(bob)], NOW)
    assert result.mime is None
    assert result.info.decrypted_with is None
    assert result.info.encrypted
    assert (
        result.info.problem == "no certificate of this connection matches the message's recipients"
    )


def test_an_expired_certificate_does_not_decrypt(smime: Smime) -> None:
    old = identity("old", expired=True)
    result = unwrap(smime.encrypt(INNER, old, "late"), [pair(old)], NOW)
    assert result.mime is None
    assert result.info.decrypted_with is None
    assert result.info.problem is not None
    assert "'old' expired on" in result.info.problem


def test_a_corrupt_envelope_is_noted(smime: Smime, alice: Identity) -> None:
    raw = corrupt_envelope(smime.encrypt(INNER, alice, "damaged"))
    result = unwrap(raw, [pair(alice)], NOW)
    assert result.mime is None
    assert result.info.encrypted
    assert result.info.problem is not None
    assert "corrupt" in result.info.problem


def test_garbage_in_place_of_pkcs7_is_noted(alice: Identity) -> None:
    raw = (
        b"From: x@example.test\r\nContent-Type: application/pkcs7-mime; "
        b"smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA!!!!\r\n"
    )
    result = unwrap(raw, [pair(alice)], NOW)
    assert result.mime is None
    assert result.info.encrypted
    assert result.info.problem is not None
    assert "corrupt" in result.info.problem


def test_ec_recipients_are_reported_as_unsupported(smime: Smime, eve_ec: Identity) -> None:
    result = unwrap(smime.encrypt(INNER, eve_ec, "ec"), [pair(eve_ec)], NOW)
    assert result.mime is None
    assert result.info.encrypted
    assert result.info.problem is not None
    assert "EC key" in result.info.problem


def test_plain_mail_is_not_touched(alice: Identity) -> None:
    result = unwrap(b"Subject: hi\r\n\r\nhello\r\n", [pair(alice)], NOW)
    assert result.mime is None
    assert result.info.model_dump(exclude_defaults=True) == {}


def test_smime_is_told_from_the_header_alone(
    smime: Smime, alice: Identity, eve_ec: Identity
) -> None:
    for raw in (
        smime.encrypt(INNER, alice, "x"),
        smime.encrypt(INNER, eve_ec, "x"),
        smime.sign(INNER, alice, "x"),
        smime.sign(INNER, eve_ec, "x", opaque=True),
    ):
        assert is_smime(raw)
    assert not is_smime(b"Subject: hi\r\nContent-Type: multipart/signed; protocol=pgp\r\n\r\n")
    assert not is_smime(b"Subject: pkcs7 in the subject\r\n\r\nbody\r\n")
