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
