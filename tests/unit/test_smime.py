"""S/MIME unwrapping on messages made by ``openssl``: each case ends in its documented state."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from email import message_from_bytes

import pytest

from mailintake_shared.smime import KeyPair, is_smime, unwrap
from tests.harness import smime_corpus as corpus
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


def test_ec_recipients_are_decrypted(smime: Smime, eve_ec: Identity) -> None:
    key = pair(eve_ec)
    result = unwrap(smime.encrypt(INNER, eve_ec, "ec"), [key], NOW)
    assert result.info.decrypted_with == key.certificate_id
    assert result.info.problem is None
    assert result.mime is not None
    assert b"quarterly numbers" in body_of(result.mime)


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


# The corpus: messages as mail clients write them (tests/data/smime/README.md).


@pytest.fixture(scope="module")
def corpus_keys() -> dict[str, KeyPair]:
    return {name: corpus.key_pair(name) for name in ("alice", "eve")}


def test_every_corpus_message_has_its_expected_outcome() -> None:
    listed = [
        *corpus.DECRYPTED,
        *corpus.SIGNED,
        *corpus.NESTED,
        *corpus.TAMPERED,
        *corpus.UNSUPPORTED,
    ]
    assert sorted(listed) == sorted(corpus.every_message())  # each once, none left out
    # The BER ones are BER with indefinite lengths, as NSS (Thunderbird) writes them.
    for name in corpus.every_message():
        indefinite = corpus.cms_of(corpus.message(name))[1] == 0x80
        assert indefinite == name.endswith("-ber"), name


def subject_of(mime: bytes) -> str | None:
    return message_from_bytes(mime)["Subject"]


@pytest.mark.parametrize("name", sorted(corpus.DECRYPTED))
def test_corpus_mail_is_decrypted_with_its_recipients_key(
    name: str, corpus_keys: dict[str, KeyPair]
) -> None:
    raw = corpus.message(name)
    assert corpus.SECRET_WORDS not in raw
    key = corpus_keys[corpus.DECRYPTED[name]]
    result = unwrap(raw, list(corpus_keys.values()), NOW)
    assert result.info.encrypted
    assert result.info.decrypted_with == key.certificate_id
    assert result.info.problem is None
    assert result.info.signature is None
    assert result.mime is not None
    assert subject_of(result.mime) == name
    assert corpus.SECRET_WORDS in body_of(result.mime)
    # Without the key it stays shut, and says why.
    others = [k for k in corpus_keys.values() if k is not key]
    shut = unwrap(raw, others, NOW)
    assert (shut.mime, shut.info.encrypted, shut.info.decrypted_with) == (None, True, None)
    assert shut.info.problem == "no certificate of this connection matches the message's recipients"


@pytest.mark.parametrize("name", sorted(corpus.SIGNED))
def test_corpus_signatures_are_valid_with_their_signer(name: str) -> None:
    result = unwrap(corpus.message(name), [], NOW)
    assert result.info.signature == "valid"
    assert result.info.signer == f"{corpus.SIGNED[name]}@example.test"
    assert result.info.problem is None
    assert not result.info.encrypted
    if "opaque" in name or name == "signed-twice-ber":  # the content was inside the signature
        assert result.mime is not None
        assert subject_of(result.mime) == name
        assert corpus.SECRET_WORDS in result.mime
    else:
        assert result.mime is None


@pytest.mark.parametrize("name", sorted(corpus.NESTED))
def test_corpus_nested_mail_is_decrypted_and_verified(
    name: str, corpus_keys: dict[str, KeyPair]
) -> None:
    recipient, signer = corpus.NESTED[name]
    result = unwrap(corpus.message(name), list(corpus_keys.values()), NOW)
    assert result.info.decrypted_with == corpus_keys[recipient].certificate_id
    assert result.info.signature == "valid"
    assert result.info.signer == f"{signer}@example.test"
    assert result.info.problem is None
    assert result.mime is not None
    assert subject_of(result.mime) == name
    assert corpus.SECRET_WORDS in result.mime


@pytest.mark.parametrize("name", sorted(corpus.TAMPERED))
def test_corpus_tampering_is_invalid_because_the_check_fails(name: str) -> None:
    result = unwrap(corpus.message(name), [], NOW)
    assert result.info.signature == "invalid"
    assert result.info.signer == "bob@example.test"  # the structure was read, the check failed
    assert result.info.problem == corpus.TAMPERED[name]


@pytest.mark.parametrize("name", sorted(corpus.UNSUPPORTED))
def test_corpus_algorithms_not_supported_are_named(
    name: str, corpus_keys: dict[str, KeyPair]
) -> None:
    raw = corpus.message(name)
    result = unwrap(raw, list(corpus_keys.values()), NOW)
    assert result.info.problem == corpus.UNSUPPORTED[name]
    assert result.info.decrypted_with is None
    assert result.info.encrypted == name.startswith("enveloped")
    if name.startswith("signed"):
        assert result.info.signature == "unverifiable"


def test_a_changed_gcm_ciphertext_fails_its_authentication_tag(
    corpus_keys: dict[str, KeyPair],
) -> None:
    raw = corpus.message("enveloped-aes128-gcm-der")
    der = bytearray(corpus.cms_of(raw))
    assert der[-18:-16] == b"\x04\x10"  # the 16-byte tag closes the structure
    der[-19] ^= 0x01  # the ciphertext's last byte
    result = unwrap(corpus.with_cms(raw, bytes(der)), list(corpus_keys.values()), NOW)
    assert (result.mime, result.info.encrypted, result.info.decrypted_with) == (None, True, None)
    assert result.info.problem == (
        "corrupt envelope: the content does not match its authentication tag"
    )


def test_damaged_cms_is_noted_and_never_raises(corpus_keys: dict[str, KeyPair]) -> None:
    """Bytes changed anywhere in the corpus' CMS: each message ends unwrapped or with a
    problem noted, never with an exception (the store would note that as a bug)."""
    rng = random.Random(17)
    keys = list(corpus_keys.values())
    outcomes: list[bool] = []
    for name in sorted(corpus.every_message()):
        raw = corpus.message(name)
        original = corpus.cms_of(raw)
        for _ in range(12):
            der = bytearray(original)
            for _ in range(rng.randint(1, 3)):
                der[rng.randrange(len(der))] = rng.randrange(256)
            result = unwrap(corpus.with_cms(raw, bytes(der)), keys, NOW)
            outcomes.append(result.info.problem is not None)
    assert sum(outcomes) > len(outcomes) // 2  # most damage is noticed (some hits no check)
