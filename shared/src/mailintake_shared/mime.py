"""A header summary of a raw message, tolerant of anything: problems are noted, never raised.

Only the header block is parsed (bounded time and memory whatever the body holds). Values
are decoded as mail clients show them (``decode_value``). Text is cleaned for the database:
NUL bytes and undecodable bytes are replaced.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser

from mailintake_shared import smime
from mailintake_shared.events import HeaderSummary
from mailintake_shared.rfc5322 import MAX_HEADER_BLOCK, header_end

_MAX_VALUE = 10_000
NUL_PROBLEM = "NUL bytes in the message"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the email package's line ends
# A header line as the email package's parser accepts it: a name of printable characters
# other than the colon (non-empty here), then the colon; the value starts after blanks.
_NAME = rb"[\x21-\x39\x3b-\x7e]+:"
# A block of header lines (each line ended by "\n"): every line a header or a continuation.
_SIMPLE_BLOCK = re.compile(_NAME + rb"[^\n]*(?:\n(?:[ \t]|" + _NAME + rb")[^\n]*)*")
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
# A wanted field at the start of a line, its value from after the blanks that follow the
# colon, with its continuation lines.
_WANTED_FIELD = re.compile(
    rb"^(" + "|".join(_FIELDS.values()).encode("ascii") + rb"):[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
EIGHT_BIT_PROBLEM = "8-bit bytes in the header (read as UTF-8, else as Windows-1252)"
# RFC 2047 §2, read leniently as clients do: anywhere in the value, not only between blanks.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")
# Charsets read as the superset senders mean by them, as mail clients (and the WHATWG
# Encoding Standard) do: mail labelled ISO-8859-1 carries Windows-1252 quotes and euro signs.
_SUPERSETS = {"ascii": "cp1252", "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030"}


def clean_text(value: str) -> str:
    """Text safe for any database: no NUL, no lone surrogates, bounded length."""
    if not value.isascii():
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "\ufffd")[:_MAX_VALUE]


def _word(charset: str, encoding: str, text: str) -> tuple[str, bytes] | None:
    """An encoded word's codec and bytes; None when it cannot be read."""
    try:  # RFC 2231 §5: "*" and a language may follow the charset
        codec = codecs.lookup(charset.split("*", 1)[0]).name
    except LookupError:
        return None
    codec = _SUPERSETS.get(codec, codec)
    if encoding in "Qq":  # RFC 2047 §4.2
        escaped = text.replace("_", " ").encode("utf-8")
        return codec, _Q_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), escaped)
    bare = text.rstrip("=")  # RFC 2047 §4.1; clients forgive missing padding
    if not _BASE64.fullmatch(bare) or len(bare) % 4 == 1:
        return None
    return codec, binascii.a2b_base64(bare + "=" * (-len(bare) % 4))


def _decode_words(value: str) -> tuple[str, bool]:
    """Decode the encoded words of an unfolded value (RFC 2047 §6.2): blanks between adjacent
    encoded words are dropped, other text is kept; adjacent words in one charset are decoded
    together (senders split a character's bytes over two words). A word that cannot be read
    stays as it is written, and the value is then not readable."""
    parts: list[str] = []
    codec, run = "", bytearray()  # the last words, adjacent and in one charset, undecoded
    readable, position = True, 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        position = match.end()
        word = _word(match[1], match[2], match[3])
        adjacent = bool(codec) and not between.strip(" \t")
        if word is not None and adjacent and word[0] == codec:
            run += word[1]
            continue
        if codec:
            parts.append(run.decode(codec, "replace"))
            codec = ""
        if word is None:
            readable = False
            parts.append(between + match[0])
            continue
        if not adjacent:
            parts.append(between)
        codec, run = word[0], bytearray(word[1])
    if codec:
        parts.append(run.decode(codec, "replace"))
    parts.append(value[position:])
    return "".join(parts), readable


def decode_value(value: str) -> tuple[str, bool]:
    """A header field's value as mail clients show it, and whether every encoded word in it
    could be read: undeclared 8-bit bytes (surrogate-escaped, as the email package reads
    them) as UTF-8 when they are valid UTF-8, else as Windows-1252; unfolded (RFC 5322
    §2.2.3); then its encoded words decoded (RFC 2047 §6.2, with RFC 2231 §5 languages)."""
    if not value.isascii():
        data = value.encode("utf-8", "surrogateescape")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            value = data.decode("cp1252", "replace")
    if "\n" in value or "\r" in value:
        value = _LINE_BREAK.sub("", value)
    if "=?" not in value:
        return value, True
    return _decode_words(value)


def _simple_fields(head: bytes) -> dict[str, str] | None:
    """The summary fields of an ASCII header block in which every line is a header or the
    continuation of one (nearly every message), read without the email package: the first
    occurrence of each, continuation lines joined as its parser joins them. None for any other
    block: the email package parses those and names their defects. Two passes of compiled
    patterns over the block, not a pattern per line: this runs for every message."""
    if b"\r" in head:  # every line end as the email package splits them, made "\n"
        head = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if _SIMPLE_BLOCK.fullmatch(head) is None:
        return None
    fields: dict[str, str] = {}
    for match in _WANTED_FIELD.finditer(head):
        fields.setdefault(match[1].decode("ascii").lower(), match[2].decode("ascii"))
    return fields


def _parsed_fields(head: bytes, problems: list[str]) -> dict[str, str]:
    """The summary fields as the email package reads them, and its defects as problems."""
    # compat32 keeps headers as strings: several times faster than the header objects of
    # policy.default.
    message = BytesParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n", headersonly=True)
    problems.extend(sorted({type(defect).__name__ for defect in message.defects}))
    fields: dict[str, str] = {}
    # raw_items: the values as read (8-bit bytes surrogate-escaped), not yet replaced by U+FFFD.
    for name, value in message.raw_items():
        name = name.lower()
        if name in _WANTED and name not in fields:
            fields[name] = value
    return fields


def summarize(raw: bytes) -> tuple[HeaderSummary, list[str]]:
    problems: list[str] = []
    if not raw or raw.isspace():  # not raw.strip(): that copies the message
        return HeaderSummary(), ["empty message"]
    if b"\x00" in raw:
        problems.append(NUL_PROBLEM)
    separator = header_end(raw)
    if separator is None:
        problems.append("no blank line between header and body")
        head = raw[:MAX_HEADER_BLOCK]
    else:
        head = raw[: separator[0]]
    if not head.isascii():
        problems.append(EIGHT_BIT_PROBLEM)
    fields = _simple_fields(head) if head.isascii() else None
    if fields is None:
        fields = _parsed_fields(head, problems)
    values: dict[str, str | None] = {}
    for field, header in _FIELDS.items():
        raw_value = fields.get(header.lower())
        if raw_value is None:
            values[field] = None
            continue
        decoded, readable = decode_value(raw_value)
        if not readable:
            problems.append(f"unreadable {header} header")
        values[field] = clean_text(" ".join(decoded.split()))
    if not values["message_id"]:
        problems.append("no Message-ID header")
    return HeaderSummary(**values), problems


@dataclass(frozen=True)
class Reading:
    """What is read from a message as its pieces go by: the header summary and problems of
    the first piece (the header block is within it), NUL bytes anywhere, S/MIME. The fetcher
    makes it; the store takes it as it is."""

    headers: HeaderSummary
    problems: list[str]
    smime: bool

    @classmethod
    def of(cls, first: bytes) -> Reading:
        headers, problems = summarize(first)
        return cls(headers, problems, bool(first) and smime.is_smime(first))

    def more(self, piece: bytes) -> Reading:
        """The same reading after another piece (only NUL bytes can change it)."""
        if NUL_PROBLEM in self.problems or b"\x00" not in piece:
            return self
        return Reading(self.headers, [NUL_PROBLEM, *self.problems], self.smime)
