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
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the email package's line ends
# A header line as the email package's parser accepts it: a name of printable characters
# other than the colon (non-empty here), then the colon; the value starts after blanks.
_HEADER_LINE = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)")
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
_WANTED = frozenset(header.lower() for header in _FIELDS.values())


def clean_text(value: str) -> str:
    """Text safe for any database: no NUL, no lone surrogates, bounded length."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "\ufffd")[:_MAX_VALUE]


def _simple_fields(head: bytes) -> dict[str, str] | None:
    """The summary fields of an ASCII header block in which every line is a header or the
    continuation of one (nearly every message), read without the email package: the first
    occurrence of each, continuation lines joined as its parser joins them. None for any other
    block: the email package parses those and names their defects."""
    fields: dict[str, str] = {}
    collecting: str | None = None  # the field whose continuation lines come next
    for number, line in enumerate(_LINE_BREAK.split(head.decode("ascii"))):
        if line.startswith((" ", "\t")):
            if number == 0:
                return None
            if collecting is not None:
                fields[collecting] += "\n" + line
            continue
        match = _HEADER_LINE.match(line)
        if match is None:
            return None
        name = match.group(1).lower()
        collecting = name if name in _WANTED and name not in fields else None
        if collecting is not None:
            fields[collecting] = match.group(2)
    return fields


def _parsed_fields(head: bytes, problems: list[str]) -> dict[str, str]:
    """The summary fields as the email package reads them, and its defects as problems."""
    # compat32 keeps headers as strings: several times faster than the header objects of
    # policy.default.
    message = BytesParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n", headersonly=True)
    problems.extend(sorted({type(defect).__name__ for defect in message.defects}))
    fields: dict[str, str] = {}
    for header in _FIELDS.values():
        value = message.get(header)
        if value is not None:
            fields[header.lower()] = str(value)
    return fields


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
    fields = _simple_fields(head) if head.isascii() else None
    if fields is None:
        fields = _parsed_fields(head, problems)
    values: dict[str, str | None] = {}
    for field, header in _FIELDS.items():
        raw_value = fields.get(header.lower())
        if raw_value is None:
            values[field] = None
            continue
        try:
            decoded = str(make_header(decode_header(raw_value))) if "=?" in raw_value else raw_value
        except Exception:  # the email package raises many things on hostile headers
            problems.append(f"unreadable {header} header")
            decoded = raw_value
        values[field] = clean_text(" ".join(decoded.split()))
    if not values["message_id"]:
        problems.append("no Message-ID header")
    return HeaderSummary(**values), problems
