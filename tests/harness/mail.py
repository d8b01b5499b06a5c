"""Test messages: plausible RFC 5322 mail of a chosen size, each with a unique Message-ID."""

from __future__ import annotations

import base64
import random
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime

# Undeclared 8-bit bytes in headers (RFC 6532 style) and an 8-bit body: servers keep them
# (Dovecot), replace them at APPEND (Cyrus: ``X``), or rewrite them when serving (Courier's
# POP3 without UTF8).
EIGHT_BIT = (
    b"From: J\xc3\xbcrgen <j@example.org>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n"
    b"Message-ID: <8bit@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nK\xc3\xa4se und \xe9clair\r\n"
)


def make_message(
    index: int = 0,
    *,
    size: int = 2048,
    subject: str | None = None,
    sender: str = "customer@example.org",
    to: str = "support@example.com",
    seed: int | None = None,
) -> bytes:
    """One message of about ``size`` bytes (a base64 attachment pads large ones)."""
    rng = random.Random(seed if seed is not None else index)
    message_id = f"<{uuid.UUID(int=rng.getrandbits(128))}@example.org>"
    headers = (
        f"From: Customer {index} <{sender}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject or f'Request {index}'}\r\n"
        f"Date: {format_datetime(datetime(2026, 1, 1, tzinfo=UTC))}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
    )
    text = f"Hello, this is message {index}.\r\n" + "Lorem ipsum dolor sit amet. " * 20 + "\r\n"
    if size <= len(headers) + len(text) + 200:
        body = "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
        return (headers + body).encode()
    payload = rng.randbytes(max(0, (size - len(headers) - len(text) - 400) * 3 // 4))
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    boundary = f"b{index}x{rng.getrandbits(32)}"
    body = (
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="file{index}.bin"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
        f"--{boundary}--\r\n"
    )
    return (headers + body).encode()
