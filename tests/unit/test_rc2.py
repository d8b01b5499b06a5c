"""RC2 decryption (RFC 2268), which counting a legacy PKCS#12 file's rounds needs: the RFC's
own test vectors, and CBC against cryptography's RC2 where it has one (128-bit keys)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from mailintake_config_api.rc2 import PITABLE, decrypt_cbc

# RFC 2268 section 5: key, effective key bits, plaintext, ciphertext.
VECTORS = [
    ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
    ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
    ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
    ("88", 64, "0000000000000000", "61a8a244adacccf0"),
    ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
    (
        "88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e",
        129,
        "0000000000000000",
        "5b78d3a43dfff1f1",
    ),
]


def test_pitable_is_a_permutation() -> None:
    assert sorted(PITABLE) == list(range(256))


@pytest.mark.parametrize(("key", "bits", "plain", "sealed"), VECTORS)
def test_the_rfc_vectors_decrypt(key: str, bits: int, plain: str, sealed: str) -> None:
    # One block in CBC with a zero IV is the block cipher itself.
    assert decrypt_cbc(bytes.fromhex(key), bits, bytes(8), bytes.fromhex(sealed)).hex() == plain


def test_cbc_agrees_with_cryptography_for_128_bit_keys() -> None:
    key, iv, data = os.urandom(16), os.urandom(8), os.urandom(64)
    encryptor = Cipher(RC2(key), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(data) + encryptor.finalize()
    assert decrypt_cbc(key, 128, iv, sealed) == data
    with pytest.raises(ValueError, match="8-byte blocks"):
        decrypt_cbc(key, 128, iv, sealed[:-1])
