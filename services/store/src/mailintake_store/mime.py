"""A header summary of a raw message, tolerant of anything: problems are noted, never raised.

Only the header block is parsed (bounded time and memory whatever the body holds). Text
is cleaned for the database: NUL bytes and undecodable bytes are replaced.
"""

from __future__ import annotations

import re
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

from mailintake_shared.events import HeaderSummary

_MAX_HEADER_BLOCK = 256 * 1024
_MAX_VALUE = 10_000
NUL_PROBLEM = "NUL bytes in the message"
_SEPARATOR = re.compile(rb"\r?\n\r?\n")
_FIELDS = {
    "from_": "From",
    "to": "To",
    "cc": "Cc",
    "subject": "Subject",
    "date": "Date",
    "message_id": "Message-ID",
    "in_reply_to": "In-Reply-To",
    "references": "References",
}


def clean_text(value: str) -> str:
    """Text safe for any database: no NUL, no lone surrogates, bounded length."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "\ufffd")[:_MAX_VALUE]


def summarize(raw: bytes) -> tuple[HeaderSummary, list[str]]:
    problems: list[str] = []
    if not raw.strip():
        return HeaderSummary(), ["empty message"]
    if b"\x00" in raw:
        problems.append(NUL_PROBLEM)
    separator = _SEPARATOR.search(raw, 0, _MAX_HEADER_BLOCK)
    if separator is None:
        problems.append("no blank line between header and body")
        head = raw[:_MAX_HEADER_BLOCK]
    else:
        head = raw[: separator.start()]
    if not head.isascii():
        problems.append("8-bit bytes in the header (decoded as UTF-8 with replacement)")
    # compat32 keeps headers as strings: several times faster than the header objects of
    # policy.default; only the eight summary fields are then decoded (RFC 2047).
    message = BytesParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n", headersonly=True)
    problems.extend(sorted({type(defect).__name__ for defect in message.defects}))
    values: dict[str, str | None] = {}
    for field, header in _FIELDS.items():
        raw_value = message.get(header)
        if raw_value is None:
            values[field] = None
            continue
        try:
            decoded = str(make_header(decode_header(str(raw_value))))
        except Exception:  # the email package raises many things on hostile headers
            problems.append(f"unreadable {header} header")
            decoded = str(raw_value)
        values[field] = clean_text(" ".join(decoded.split()))
    if not values["message_id"]:
        problems.append("no Message-ID header")
    return HeaderSummary(**values), problems
