from __future__ import annotations

import pytest

from mailintake_shared.secretbox import (
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    generate_key,
)


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt("hunter2-päss")
    assert b"hunter2" not in token
    assert box.decrypt(token).get_secret_value() == "hunter2-päss"
    assert box.encrypt("same") != box.encrypt("same")  # random IV per encryption


def test_rotation_old_keys_decrypt_new_writes_use_the_new_key() -> None:
    old, new = generate_key(), generate_key()
    before = SecretBox([old]).encrypt("s3cret")
    rotated_box = SecretBox([new, old])
    assert rotated_box.decrypt(before).get_secret_value() == "s3cret"
    after = rotated_box.encrypt("s3cret")
    assert SecretBox([new]).decrypt(after).get_secret_value() == "s3cret"
    with pytest.raises(SecretDecryptError):
        SecretBox([old]).decrypt(after)
    re_encrypted = rotated_box.rotate(before)
    assert SecretBox([new]).decrypt(re_encrypted).get_secret_value() == "s3cret"


def test_missing_or_malformed_keys_are_refused_with_a_clear_message() -> None:
    with pytest.raises(SecretKeyError, match="MAILINTAKE_ENCRYPTION_KEYS"):
        SecretBox([])
    with pytest.raises(SecretKeyError, match="key #2"):
        SecretBox([generate_key(), "not-a-key"])
    with pytest.raises(SecretDecryptError):
        SecretBox([generate_key()]).decrypt(b"garbage")
