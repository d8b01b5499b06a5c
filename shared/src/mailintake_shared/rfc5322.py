"""Where a message's header block ends (RFC 5322 §2.1), looked for in every message on the
bulk path: two byte searches, several times faster than the pattern ``\\r?\\n\\r?\\n``, which
the regular-expression engine tries at every position."""

from __future__ import annotations

MAX_HEADER_BLOCK = 256 * 1024
"""Bytes searched for the end of the header block; a longer block is read up to here."""


def header_end(raw: bytes, limit: int = MAX_HEADER_BLOCK) -> tuple[int, int] | None:
    """The (start, end) offsets of the empty line that ends the header block, as the first
    match of ``\\r?\\n\\r?\\n`` within ``raw[:limit]`` would give them (a bare LF ends a line
    too, as mailboxes store it); None when there is none."""
    crlf = raw.find(b"\n\r\n", 0, limit)
    lf = raw.find(b"\n\n", 0, limit if crlf < 0 else crlf + 1)
    if lf >= 0:
        start, end = lf, lf + 2
    elif crlf >= 0:
        start, end = crlf, crlf + 3
    else:
        return None
    if start and raw[start - 1] == 0x0D:  # the CR of the last header line's CRLF
        start -= 1
    return start, end
