#!/usr/bin/env bash
# Remakes the S/MIME test corpus in this folder with the openssl command line (OpenSSL 3).
# Keys and certificates are made for these tests only; every run makes new ones, so the
# messages are remade with them. README.md says what each file is.
#   tests/data/smime/make-corpus.sh
set -euo pipefail
cd "$(dirname "$0")"
export LC_ALL=C

inner=$(mktemp)
trap 'rm -f "$inner"' EXIT
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nThe quarterly numbers are attached in confidence.\r\n' >"$inner"

identity() { # name, key algorithm options
  local name=$1
  shift
  openssl genpkey "$@" -out "$name.key" 2>/dev/null
  openssl req -x509 -new -key "$name.key" -out "$name.crt" -days 36500 -sha256 \
    -subj "/CN=$name/emailAddress=$name@example.test" \
    -addext "subjectAltName=email:$name@example.test" \
    -addext "subjectKeyIdentifier=hash" -addext "keyUsage=digitalSignature,keyEncipherment,keyAgreement"
}
identity alice -algorithm RSA -pkeyopt rsa_keygen_bits:2048 # RSA recipient
identity bob -algorithm RSA -pkeyopt rsa_keygen_bits:2048   # RSA signer
identity eve -algorithm EC -pkeyopt ec_paramgen_curve:P-256 # EC: ECDH recipient, ECDSA signer
identity dave -paramfile <(openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:2048 2>/dev/null) # DSA: not supported

headers() { echo -from sender@example.test -to inbox@example.test -subject "$1"; }

encrypt() { # file, input, options …
  local name=$1 input=$2
  shift 2
  # shellcheck disable=SC2046
  openssl cms -encrypt -in "$input" $(headers "$name") -out "$name.eml" "$@"
}
sign() { # file, input, signer, options …
  local name=$1 input=$2 signer=$3
  shift 3
  # shellcheck disable=SC2046
  openssl cms -sign -in "$input" -signer "$signer.crt" -inkey "$signer.key" $(headers "$name") \
    "$@" -out "$name.eml"
}

# Enveloped data: DER, or BER with indefinite lengths (-stream) as Thunderbird (NSS) writes.
encrypt enveloped-aes128-der "$inner" -aes128 alice.crt
encrypt enveloped-aes192-ber "$inner" -aes192 -stream alice.crt
encrypt enveloped-aes256-ber "$inner" -aes256 -stream alice.crt
encrypt enveloped-3des-der "$inner" -des3 alice.crt
encrypt enveloped-3des-ber "$inner" -des3 -stream alice.crt
encrypt enveloped-aes128-gcm-der "$inner" -aes-128-gcm alice.crt
encrypt enveloped-aes256-gcm-ber "$inner" -aes-256-gcm -stream alice.crt
encrypt enveloped-oaep-sha1 "$inner" -aes256 -recip alice.crt -keyopt rsa_padding_mode:oaep
encrypt enveloped-oaep-sha256-ber "$inner" -aes256 -stream -recip alice.crt \
  -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256
encrypt enveloped-keyid "$inner" -aes256 -keyid alice.crt
encrypt enveloped-two-recipients "$inner" -aes256 bob.crt alice.crt
encrypt enveloped-ecdh-sha1kdf "$inner" -aes128 eve.crt
encrypt enveloped-ecdh-sha256kdf-ber "$inner" -aes256 -stream -recip eve.crt \
  -keyopt ecdh_kdf_md:sha256
encrypt enveloped-ecdh-cofactor "$inner" -aes256 -recip eve.crt -keyopt ecdh_cofactor_mode:1
encrypt enveloped-ecdh-aes256-gcm "$inner" -aes-256-gcm -recip eve.crt -keyopt ecdh_kdf_md:sha384
# Not supported: a content cipher outside AES and 3DES, a password recipient.
encrypt enveloped-aria256 "$inner" -aria-256-cbc alice.crt
encrypt enveloped-password "$inner" -aes256 -pwri_password "test password"

# Signed data: detached (multipart/signed) and opaque (signed-data), DER and BER.
sign signed-detached-sha1-ber "$inner" bob -md sha1 # made BER below
sign signed-detached-sha256-ber "$inner" bob -md sha256 # made BER below
sign signed-detached-sha256-der "$inner" bob -md sha256
sign signed-detached-sha224 "$inner" bob -md sha224
sign signed-detached-sha384 "$inner" bob -md sha384
sign signed-detached-sha512 "$inner" bob -md sha512
sign signed-opaque-sha256-ber "$inner" bob -nodetach -stream
sign signed-opaque-sha1-der "$inner" bob -nodetach -md sha1
sign signed-noattr "$inner" bob -noattr
sign signed-keyid "$inner" bob -keyid
sign signed-ecdsa-detached "$inner" eve -md sha256
sign signed-ecdsa-opaque-ber "$inner" eve -nodetach -stream -md sha384
sign signed-pss "$inner" bob -md sha256 -keyopt rsa_padding_mode:pss
sign signed-pss-sha512-opaque "$inner" bob -nodetach -md sha512 -keyopt rsa_padding_mode:pss \
  -keyopt rsa_pss_saltlen:32
sign signed-dsa "$inner" dave -md sha256

# Nested: signed then encrypted (what clients send), encrypted then signed.
signed=$(mktemp)
openssl cms -sign -in "$inner" -signer bob.crt -inkey bob.key -stream -out "$signed"
encrypt signed-then-encrypted-ber "$signed" -aes256 -stream alice.crt
enveloped=$(mktemp)
openssl cms -encrypt -in "$inner" -out "$enveloped" -des3 alice.crt
sign encrypted-then-signed "$enveloped" bob
# Signed twice: an opaque ECDSA signature over a detached RSA one.
openssl cms -sign -in "$inner" -signer bob.crt -inkey bob.key -out "$signed"
sign signed-twice-ber "$signed" eve -nodetach -stream
rm -f "$signed" "$enveloped"

python3 - <<'PY'
import base64
import email
from pathlib import Path


def tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """A DER element's tag, where its contents start and where it ends."""
    size, start = der[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        size, start = int.from_bytes(der[start : start + count], "big"), start + count
    return der[at], start, start + size


def children(der: bytes, start: int, end: int) -> list[bytes]:
    found = []
    while start < end:
        _, contents, stop = tlv(der, start)
        found.append(der[start:stop])
        start = stop
    return found


def indefinite(tag: int, contents: bytes) -> bytes:
    return bytes([tag, 0x80]) + contents + b"\0\0"


def as_nss_writes(der: bytes) -> bytes:
    """A DER SignedData with the indefinite lengths NSS (Thunderbird) writes: ContentInfo,
    its [0], SignedData and encapContentInfo; certificates and signer infos stay DER."""
    _, start, end = tlv(der, 0)
    oid, explicit = children(der, start, end)
    _, start, end = tlv(explicit, 0)
    (signed,) = children(explicit, start, end)
    _, start, end = tlv(signed, 0)
    version, digests, encap, *rest = children(signed, start, end)
    _, start, end = tlv(encap, 0)
    encap_ber = indefinite(0x30, b"".join(children(encap, start, end)))
    signed_ber = indefinite(0x30, version + digests + encap_ber + b"".join(rest))
    return indefinite(0x30, oid + indefinite(0xA0, signed_ber))


def nss_signature(name: str) -> None:
    path = Path(f"{name}.eml")
    raw = path.read_bytes()
    signature = email.message_from_bytes(raw).get_payload()[1].get_payload()
    der = base64.b64decode(signature)
    ber = base64.encodebytes(as_nss_writes(der)).decode().replace("\n", "\r\n")
    path.write_bytes(raw.replace(signature.encode(), ber.encode()))


nss_signature("signed-detached-sha1-ber")
nss_signature("signed-detached-sha256-ber")


# Tampered after signing: the content, the signature value.

def edit(source: str, target: str, change) -> None:
    raw = Path(f"{source}.eml").read_bytes().replace(source.encode(), target.encode())
    Path(f"{target}.eml").write_bytes(change(raw))

def body_der(raw: bytes, edit_der) -> bytes:
    head, blank, body = raw.partition(b"\n\n")
    der = edit_der(bytearray(base64.b64decode(b"".join(body.split()))))
    return head + blank + base64.encodebytes(bytes(der))

def flip_last(der: bytearray) -> bytearray:
    der[-1] ^= 0x01  # the last byte of the signature value (DER, no unsigned attributes)
    return der

def shout(der: bytearray) -> bytearray:
    return bytearray(bytes(der).replace(b"quarterly", b"QUARTERLY", 1))

edit("signed-detached-sha256-der", "tampered-detached-content",
     lambda raw: raw.replace(b"quarterly", b"QUARTERLY", 1))
edit("signed-opaque-sha1-der", "tampered-opaque-content", lambda raw: body_der(raw, shout))
edit("signed-noattr", "tampered-noattr-content",
     lambda raw: raw.replace(b"quarterly", b"QUARTERLY", 1))
edit("signed-opaque-sha1-der", "tampered-signature", lambda raw: body_der(raw, flip_last))
PY
