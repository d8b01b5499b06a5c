"""Hostile and malformed messages the store must keep, raw, flagged, without blocking."""

from __future__ import annotations

MALFORMED: dict[str, bytes] = {
    "broken multipart": (
        b"From: a@example.org\r\nSubject: broken\r\nMessage-ID: <broken@x>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="never"\r\n\r\n'
        b"--nope\r\nno closing boundary at all\r\n"
    ),
    "8-bit headers": (
        "From: Jörg Müller <j@example.org>\r\nSubject: Grüße aus Köln\r\n"
        "Message-ID: <eightbit@x>\r\n\r\nbody\r\n"
    ).encode("latin-1"),
    "NUL bytes": (
        b"From: n@example.org\r\nSubject: nul\x00byte\r\nMessage-ID: <nul@x>\r\n\r\na\x00b\r\n"
    ),
    "no Message-ID": b"From: q@example.org\r\nSubject: anonymous\r\n\r\nno id here\r\n",
    "header only": b"From: h@example.org\r\nSubject: no body\r\nMessage-ID: <headonly@x>",
    "garbage": bytes(range(256)) * 4,
    "huge header": b"From: x@example.org\r\nX-Long: "
    + b"a" * 200_000
    + b"\r\nMessage-ID: <long@x>\r\n\r\nb\r\n",
    "bad encoded-word": (
        b"From: =?utf-8?B?!!!notbase64?= <e@example.org>\r\nSubject: =?x-unknown?Q?abc?=\r\n"
        b"Message-ID: <encoded@x>\r\n\r\nbody\r\n"
    ),
}


def _nested_multipart(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + b"Content-Type: text/plain\r\n\r\ninnermost\r\n" + tail


def _zip_bomb() -> bytes:
    """A zip of 200 MB of zeros: 200 KB on the wire, never to be unpacked."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("zeros.bin", bytes(200 * 1024 * 1024))
    return buffer.getvalue()


def _deep_der(depth: int) -> bytes:
    """ASN.1 SEQUENCEs nested ``depth`` deep (long-form lengths)."""
    der = b"\x05\x00"
    for _ in range(depth):
        der = b"\x30\x84" + len(der).to_bytes(4, "big") + der
    return der


def _pkcs7(der: bytes, smime_type: str = "enveloped-data") -> bytes:
    import base64

    return (
        b"From: p@example.org\r\nSubject: pkcs7\r\nMessage-ID: <p7-%d@x>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=%s\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        % (len(der), smime_type.encode())
        + base64.encodebytes(der)
    )


def _header(name: str, subject: str) -> bytes:
    return f"From: h@example.org\r\nSubject: {subject}\r\nMessage-ID: <{name}@x>\r\n".encode()


def hostile() -> dict[str, bytes]:
    """Messages made to exhaust a parser: the store must keep each, in bounded time and
    memory (it reads the header block, and S/MIME structures only)."""
    import base64

    return {
        "deep nesting": _header("deep", "deep nesting") + _nested_multipart(3_000),
        "many parts": _header("parts", "many parts")
        + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
        + b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 50_000
        + b"--p--\r\n",
        "many header fields": _header("fields", "many header fields")
        + b"".join(b"X-Field-%d: value\r\n" % i for i in range(20_000))
        + b"\r\nbody\r\n",
        "folded forever": _header("folded", "folded forever")
        + b"X-Folded: start"
        + b"\r\n continued" * 100_000
        + b"\r\n\r\nbody\r\n",
        "bad base64 and quoted-printable": _header("badenc", "bad encodings")
        + b'Content-Type: multipart/mixed; boundary="e"\r\n\r\n'
        + b"--e\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!*** not base64 ***!!!\r\n"
        + b"--e\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=\r\n"
        + b"--e--\r\n",
        "zip bomb attachment": _header("zipbomb", "zip bomb attachment")
        + b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n--z\r\n'
        + b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(_zip_bomb())
        + b"--z--\r\n",
        "gzip content-encoding": _header("gzip", "gzip content-encoding")
        + b"Content-Encoding: gzip\r\n\r\n"
        + __import__("gzip").compress(bytes(50 * 1024 * 1024)),
        "pkcs7 length bomb": _pkcs7(b"\x30\x84\x7f\xff\xff\xff\x06\x09" + b"\x00" * 64),
        "pkcs7 deep nesting": _pkcs7(_deep_der(20_000)),
        "pkcs7 compressed data": _pkcs7(
            b"\x30\x12\x06\x0b\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x01\x09\xa0\x03\x04\x01\x00",
            "compressed-data",
        ),
        "signed with thousands of parts": _header("signedparts", "signed parts")
        + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        + b'micalg=sha-256; boundary="s"\r\n\r\n'
        + b"--s\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 20_000
        + b"--s--\r\n",
    }
