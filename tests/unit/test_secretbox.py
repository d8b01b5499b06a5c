from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from mailintake_shared.secretbox import (
    SecretBindingError,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    generate_key,
    is_unbound,
)

HERE = b'{"host":"imap.example.com","id":"1"}'
ELSEWHERE = b'{"host":"imap.evil.example","id":"1"}'


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt("hunter2-päss", HERE)
    assert b"hunter2" not in token
    assert box.decrypt(token, HERE).get_secret_value() == "hunter2-päss"
    assert box.encrypt("same", HERE) != box.encrypt("same", HERE)  # random nonce each time


def test_a_secret_decrypts_only_where_it_is_bound() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt("s3cret", HERE)
    with pytest.raises(SecretBindingError, match="another row or destination"):
        box.decrypt(token, ELSEWHERE)
    altered = token[:-1] + bytes([token[-1] ^ 1])
    with pytest.raises(SecretBindingError):
        box.decrypt(altered, HERE)


def test_rotation_old_keys_decrypt_new_writes_use_the_new_key() -> None:
    old, new = generate_key(), generate_key()
    before = SecretBox([old]).encrypt("s3cret", HERE)
    rotated_box = SecretBox([new, old])
    assert rotated_box.decrypt(before, HERE).get_secret_value() == "s3cret"
    after = rotated_box.encrypt("s3cret", HERE)
    assert SecretBox([new]).decrypt(after, HERE).get_secret_value() == "s3cret"
    with pytest.raises(SecretDecryptError, match="any configured key"):
        SecretBox([old]).decrypt(after, HERE)
    re_encrypted = rotated_box.rotate(before, HERE)
    assert SecretBox([new]).decrypt(re_encrypted, HERE).get_secret_value() == "s3cret"
    with pytest.raises(SecretBindingError):
        rotated_box.rotate(before, ELSEWHERE)  # rotation keeps the binding, never moves it


def test_secrets_of_the_earlier_unbound_format_are_told_apart() -> None:
    key = generate_key()
    legacy = Fernet(key.encode()).encrypt(b"old-secret")
    box = SecretBox([key])
    assert is_unbound(legacy)
    assert not is_unbound(box.encrypt("new", HERE))
    with pytest.raises(SecretDecryptError, match="migrate"):
        box.decrypt(legacy, HERE)
    assert box.open_unbound(legacy).get_secret_value() == "old-secret"
    with pytest.raises(SecretDecryptError):
        SecretBox([generate_key()]).open_unbound(legacy)


def test_missing_or_malformed_keys_are_refused_with_a_clear_message() -> None:
    with pytest.raises(SecretKeyError, match="MAILINTAKE_ENCRYPTION_KEYS"):
        SecretBox([])
    with pytest.raises(SecretKeyError, match="key #2"):
        SecretBox([generate_key(), "not-a-key"])
    with pytest.raises(SecretDecryptError):
        SecretBox([generate_key()]).decrypt(b"garbage", HERE)
