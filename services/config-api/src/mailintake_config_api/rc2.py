"""RC2-CBC decryption (RFC 2268), for the 40-bit RC2 that older PKCS#12 exports encrypt their
certificates with (OpenSSL's ``-legacy`` default): ``cryptography`` offers 128-bit keys only,
and reading such a part is needed to count the key-derivation rounds inside it."""

from __future__ import annotations

PITABLE = bytes.fromhex(  # RFC 2268 section 2: a permutation of 0..255 from the digits of pi
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)
_MASK = 0xFFFF


def _expand(key: bytes, effective_bits: int) -> list[int]:
    """The 64 16-bit subkeys (RFC 2268 section 2)."""
    table = list(key) + [0] * (128 - len(key))
    for i in range(len(key), 128):
        table[i] = PITABLE[(table[i - 1] + table[i - len(key)]) % 256]
    t8 = (effective_bits + 7) // 8
    tm = 255 % (1 << (8 + effective_bits - 8 * t8))
    table[128 - t8] = PITABLE[table[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        table[i] = PITABLE[table[i + 1] ^ table[i + t8]]
    return [table[2 * i] | table[2 * i + 1] << 8 for i in range(64)]


def _decrypt_block(keys: list[int], block: bytes) -> bytes:
    """One 8-byte block (RFC 2268 section 4): mixing and mashing rounds, undone."""
    r = [int.from_bytes(block[i : i + 2], "little") for i in range(0, 8, 2)]
    j = 63
    for rounds, mash_after in ((5, True), (6, True), (5, False)):
        for _ in range(rounds):
            for i, shift in ((3, 5), (2, 3), (1, 2), (0, 1)):
                r[i] = ((r[i] >> shift) | (r[i] << (16 - shift))) & _MASK
                r[i] = (r[i] - keys[j] - (r[i - 1] & r[i - 2]) - ((~r[i - 1]) & r[i - 3])) & _MASK
                j -= 1
        if mash_after:
            for i in (3, 2, 1, 0):
                r[i] = (r[i] - keys[r[i - 1] & 63]) & _MASK
    return b"".join(word.to_bytes(2, "little") for word in r)


def decrypt_cbc(key: bytes, effective_bits: int, iv: bytes, data: bytes) -> bytes:
    """``data`` (a multiple of 8 bytes) decrypted in CBC mode; the padding stays."""
    if len(data) % 8 or len(iv) != 8:
        raise ValueError("RC2-CBC data must be whole 8-byte blocks")
    keys = _expand(key, effective_bits)
    out, previous = bytearray(), iv
    for start in range(0, len(data), 8):
        block = data[start : start + 8]
        plain = _decrypt_block(keys, block)
        out += bytes(a ^ b for a, b in zip(plain, previous, strict=True))
        previous = block
    return bytes(out)
