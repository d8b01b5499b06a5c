"""Reading IMAP server responses off the wire, as RFC 3501's grammar allows them (§4, §7, §9).

This is the one reader of the fetcher's bulk path (``UID FETCH`` of messages, their metadata
and byte ranges). imaplib and imapclient read the same grammar (imaplib's ``_get_response``
joins a response's lines around its literals; imapclient's ``response_lexer`` and
``response_parser`` turn it into atoms, strings and lists), but their general handling costs
more than the transfer itself. So:

- ``read_response`` reads one whole response: a line, and while the line ends with a literal
  marker (``{n}`` or ``~{n}``, §4.3), the literal's n bytes and the rest of the response's
  text. A literal may stand anywhere a string may, any number of times in one response.
- ``parse_values`` turns a response's text and literals into values: ``None`` for NIL,
  ``bytes`` for strings (quoted or literal), ``Atom`` for atoms and numbers, ``list`` for
  parenthesised lists. Section specs (``BODY[HEADER.FIELDS (FROM)]<0>``) stay one atom.
- ``FetchReader`` reads a whole ``UID FETCH`` exchange up to its tagged reply: items in any
  order, a message's items merged across several FETCH responses, unsolicited ``FETCH``,
  ``EXISTS``, ``EXPUNGE`` (which renumbers the messages after it, §7.4.1) and ``NO``
  responses anywhere. Each message is handed on as soon as its UID, its body and the
  metadata asked for have come; memory holds what has not been handed on, within a bound.

A fast path reads the shape most servers send (``* n FETCH (UID … FLAGS (…) BODY[] {size}``,
the literal, ``)``) with one regular expression; any other shape goes through the general
reader, and both give the same result (``tests/unit/test_imap_wire.py`` checks it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

ReadLine = Callable[[], bytes]
Read = Callable[[int], bytes]

SEEN = b"\\Seen"
_SEEN_LOWER = SEEN.lower()


class ProtocolViolation(Exception):  # noqa: N818 (the RFC's term)
    """The server's answer breaks RFC 3501's grammar in a way the session cannot recover
    from (an unterminated list, a literal over the size allowed); the session is dropped."""


class ServerClosed(Exception):  # noqa: N818
    """The server ended the session (``* BYE``, or the connection closed); ``str()`` is the
    server's own words."""


class Atom(bytes):
    """An atom (or number) of a response, as opposed to a string."""


Value = None | bytes | list["Value"]


@dataclass(frozen=True)
class Response:
    """One server response: its text with each literal's marker (``{n}``) kept in place and
    line ends removed, and the literals in order."""

    text: bytes
    literals: tuple[bytes, ...] = ()

    @property
    def tag(self) -> bytes:
        return self.text.split(b" ", 1)[0]


_LITERAL_MARKER = re.compile(rb"~?\{(\d+)\}\r?\n\Z")


def literal_size(line: bytes) -> int | None:
    """The size of the literal announced at the end of ``line`` (``{n}`` or ``~{n}``), if
    any: the caller reads that many bytes, then the line that continues the response."""
    marker = _LITERAL_MARKER.search(line)
    return int(marker.group(1)) if marker is not None else None


def read_response(readline: ReadLine, read: Read, max_literal: int) -> Response:
    """One whole response (RFC 3501 §7): the line, then for each literal marker at its end the
    literal's bytes and the line that continues the response.

    Raises ``ServerClosed`` when the connection ends, ``ProtocolViolation`` when a literal is
    larger than ``max_literal`` bytes (the literal is not read: the session is unusable).
    """
    line = readline()
    if not line:
        raise ServerClosed("the server closed the connection")
    return continue_response(line, readline, read, max_literal)


def continue_response(
    line: bytes,
    readline: ReadLine,
    read: Read,
    max_literal: int,
    text: bytes = b"",
    literals: tuple[bytes, ...] = (),
) -> Response:
    """The rest of a response whose ``text`` and ``literals`` so far are known and whose next
    line is ``line`` (see ``read_response``)."""
    parts, found = [text], list(literals)
    marker = _LITERAL_MARKER.search(line)
    while marker is not None:
        size = int(marker.group(1))
        if size > max_literal:
            raise ProtocolViolation(f"the server announced a literal of {size} bytes")
        parts.append(line[: marker.end(1) + 1])
        found.append(_read_exactly(read, size))
        line = readline()
        if not line:
            raise ServerClosed("the server closed the connection inside a response")
        marker = _LITERAL_MARKER.search(line)
    parts.append(line.rstrip(b"\r\n"))
    return Response(b"".join(parts), tuple(found))


def _read_exactly(read: Read, size: int) -> bytes:
    data = read(size)
    if len(data) < size:
        raise ServerClosed("the server closed the connection inside a literal")
    return data


# --- values -------------------------------------------------------------------------------

_TOKEN = re.compile(
    rb"""
    [ ]*(?:                                    # separators before a token
      (?P<open>\()
    | (?P<close>\))
    | "(?P<quoted>(?:[^"\\\r\n]|\\.)*)"      # quoted string (RFC 3501 4.3), escapes kept
    | ~?\{(?P<literal>\d+)\}                 # literal marker: the next literal
    | (?P<atom>(?:[^ ()"\[\]{]|\[[^\]]*\])+) # atom, section specs [...] kept whole
    | (?P<other>\S)                          # a lone special: kept as an atom, leniently
    )
    """,
    re.VERBOSE,
)
_UNESCAPE = re.compile(rb"\\(.)")


def parse_values(text: bytes, literals: tuple[bytes, ...] = (), start: int = 0) -> list[Value]:
    """The values of ``text[start:]`` (see the module's docstring for their types).

    Raises ``ProtocolViolation`` for an unbalanced list or a marker without its literal.
    """
    stack: list[list[Value]] = [[]]
    top = stack[0]
    next_literal = 0
    for token in _TOKEN.finditer(text, start):
        kind = token.lastgroup
        if kind == "atom":
            word = token.group("atom")
            top.append(None if word == b"NIL" or word.upper() == b"NIL" else Atom(word))
        elif kind == "open":
            top = []
            stack.append(top)
        elif kind == "close":
            if len(stack) == 1:
                raise ProtocolViolation("a list closed that was never opened")
            closed = stack.pop()
            top = stack[-1]
            top.append(closed)
        elif kind == "quoted":
            quoted = token.group("quoted")
            top.append(_UNESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)
        elif kind == "literal":
            if next_literal >= len(literals):
                raise ProtocolViolation("a literal marker without its literal")
            top.append(literals[next_literal])
            next_literal += 1
        else:
            top.append(Atom(token.group("other")))
    if len(stack) != 1:
        raise ProtocolViolation("a list that is never closed")
    return stack[0]


# --- FETCH ----------------------------------------------------------------------------------


class MessageMeta(NamedTuple):  # one per message on the bulk path: a tuple is cheapest
    uid: int
    size: int
    internal_date: datetime | None
    seen: bool


_FETCH = re.compile(rb"\* (\d+) FETCH ", re.IGNORECASE)
_EXPUNGE = re.compile(rb"\* (\d+) EXPUNGE\Z", re.IGNORECASE)


def fetch_items(response: Response) -> tuple[int, dict[bytes, Value]] | None:
    """A ``* n FETCH (…)`` response as its sequence number and its items, names upper-cased
    (``BODY.PEEK[…]`` read as ``BODY[…]``); None for any other response.

    Raises ``ProtocolViolation`` when the item list is not a list of name–value pairs.
    """
    head = _FETCH.match(response.text)
    if head is None:
        return None
    values = parse_values(response.text, response.literals, head.end())
    if len(values) != 1 or not isinstance(values[0], list) or len(values[0]) % 2:
        raise ProtocolViolation("a FETCH response whose items are not name-value pairs")
    items: dict[bytes, Value] = {}
    pairs = values[0]
    for index in range(0, len(pairs), 2):
        name = pairs[index]
        if not isinstance(name, Atom):
            raise ProtocolViolation("a FETCH item whose name is not an atom")
        items[bytes(name.upper().replace(b"BODY.PEEK[", b"BODY["))] = pairs[index + 1]
    return int(head.group(1)), items


_MONTHS = {
    month: number
    for number, month in enumerate(
        b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(),
        start=1,
    )
}


def parse_internaldate(text: bytes) -> datetime | None:
    """``24-Nov-2026 07:16:00 +0000`` (RFC 3501 date-time; the day may be space-padded) →
    an aware datetime; None when it is not one. Hand-written: ``strptime`` costs more than
    receiving the message does."""
    try:
        day, month, rest = text.strip().split(b"-", 2)
        year, clock, zone = rest.split(b" ")
        hour, minute, second = clock.split(b":")
        return datetime(
            int(year),
            _MONTHS[month.upper()],
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=_zone(zone),
        )
    except (ValueError, KeyError, IndexError):
        return None


@functools.lru_cache(maxsize=64)  # a mailbox has few zones; each made once
def _zone(text: bytes) -> timezone:
    if len(text) != 5 or text[:1] not in (b"+", b"-"):
        raise ValueError(f"not a zone: {text!r}")
    sign = -1 if text[:1] == b"-" else 1
    return timezone(timedelta(hours=int(text[1:3]), minutes=int(text[3:5])) * sign)


def _number(value: Value) -> int | None:
    return int(value) if isinstance(value, Atom) and value.isdigit() else None


@dataclass
class FetchReport:
    """How a ``UID FETCH`` went, once its tagged reply has come.

    ``delivered``: UIDs handed on with their body (or metadata, when no body was asked for).
    ``problems``: UIDs the server answered for, but not with a message (``BODY[] NIL``, an empty
    body for a message whose size is not 0, no body item), with what was wrong.
    ``expunged``: UIDs the server said were expunged during the command.
    ``status`` and ``text``: the tagged reply (``OK``, ``NO``, ``BAD``) and its text;
    ``notes``: the texts of untagged ``NO``/``BAD`` responses during the command.
    """

    delivered: set[int] = field(default_factory=set)
    problems: dict[int, str] = field(default_factory=dict)
    expunged: set[int] = field(default_factory=set)
    status: str = ""
    text: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def server_said(self) -> str:
        """The server's own words about the command: the tagged reply unless it is a plain
        OK, and the untagged NO/BAD texts."""
        words = list(self.notes)
        if self.status != "OK" or "[" in self.text:
            words.append(f"{self.status} {self.text}".strip())
        return "; ".join(words)


class Fetched(NamedTuple):
    meta: MessageMeta
    body: bytes | None  # None when no body item was asked for


# What nearly every server sends for the bulk items, in this order: one match, no tokenizing.
_FAST = re.compile(
    rb'\* (\d+) FETCH \(UID (\d+) RFC822\.SIZE (\d+) INTERNALDATE "([^"]*)" '
    rb"FLAGS \(([^)]*)\) BODY\[\] \{(\d+)\}\r\n\Z"
)


class FetchReader:
    """The answer to one ``UID FETCH`` command, read up to its tagged reply.

    ``wanted``: the UIDs asked for (None: any UID, for a listing). ``body_item``: the item that
    carries the bytes (``BODY[]``, ``BODY[]<0>``), or None when only metadata was asked for.
    ``metadata``: whether ``RFC822.SIZE``, ``INTERNALDATE`` and ``FLAGS`` were asked for; a
    message is handed on once they have come too, or at the tagged reply with what came.
    Iterate to the end; ``report`` is complete after that.

    ``max_literal`` bounds one literal and ``max_held`` the bodies held back while a message's
    other items have not come: beyond either, ``ProtocolViolation``. ``ServerClosed`` on
    ``* BYE`` or a closed connection.
    """

    def __init__(
        self,
        readline: ReadLine,
        read: Read,
        tag: bytes,
        wanted: set[int] | None,
        *,
        body_item: bytes | None,
        metadata: bool,
        max_literal: int,
        max_held: int,
    ) -> None:
        self._readline = readline
        self._read = read
        self._tag_space = tag + b" "
        self._wanted = wanted
        # One UID asked for: a FETCH response with the body but no UID item is its answer.
        self._only = next(iter(wanted)) if wanted is not None and len(wanted) == 1 else None
        self._body_item = body_item
        self._metadata = metadata
        self._max_literal = max_literal
        self._max_held = max_held
        self._partial: dict[int, dict[bytes, Value]] = {}  # by sequence number
        self._held = 0
        self.report = FetchReport()

    def __iter__(self) -> Iterator[Fetched]:
        fast = self._body_item == b"BODY[]" and self._metadata
        while True:
            line = self._readline()
            if not line:
                raise ServerClosed("the server closed the connection during FETCH")
            if fast and line[:2] == b"* ":
                match = _FAST.match(line)
                if match is not None:
                    found = self._fast(match)
                    if found is not None:
                        yield found
                    continue
            response = continue_response(line, self._readline, self._read, self._max_literal)
            if response.text.startswith(self._tag_space):
                self._tagged(response)
                yield from self._leftovers()
                return
            yield from self._untagged(response)

    def _fast(self, match: re.Match[bytes]) -> Fetched | None:
        number, uid, size, date, flags, length = match.groups()
        body = _read_exactly(self._read, self._check_literal(int(length)))
        rest = self._readline()
        if rest == b")\r\n" and int(number) not in self._partial:
            seen = _SEEN_LOWER in flags.lower().split()
            meta = MessageMeta(int(uid), int(size), parse_internaldate(date), seen)
            return self._finish(meta, body)
        # More items after the body, or items of this message came earlier: the general way.
        head = match.group(0)[: match.end(6) + 1]
        response = continue_response(
            rest, self._readline, self._read, self._max_literal, head, (body,)
        )
        return next(self._merge(response), None)

    def _check_literal(self, size: int) -> int:
        if size > self._max_literal:
            raise ProtocolViolation(f"the server announced a literal of {size} bytes")
        return size

    def _tagged(self, response: Response) -> None:
        _, _, rest = response.text.partition(b" ")
        status, _, text = rest.partition(b" ")
        self.report.status = status.decode("ascii", "replace").upper()
        self.report.text = text.decode("utf-8", "replace")

    def _untagged(self, response: Response) -> Iterator[Fetched]:
        text = response.text
        if text[:1] == b"+":
            raise ProtocolViolation("a continuation request during FETCH")
        if text[:2] != b"* ":
            return  # a tagged reply that is not ours: passed over
        expunged = _EXPUNGE.match(text)
        if expunged is not None:
            self._expunge(int(expunged.group(1)))
            return
        word = text[2:].split(b" ", 1)[0].upper()
        if word == b"BYE":
            raise ServerClosed(text[2:].decode("utf-8", "replace"))
        if word in (b"NO", b"BAD"):
            self.report.notes.append(text[2:].decode("utf-8", "replace"))
            return
        yield from self._merge(response)  # FETCH; EXISTS, RECENT, OK […] … are passed over

    def _merge(self, response: Response) -> Iterator[Fetched]:
        """Add a FETCH response's items to what came for its message; hand the message on
        when everything asked for is there."""
        parsed = fetch_items(response)
        if parsed is None:
            return
        number, items = parsed
        entry = self._partial.setdefault(number, {})
        for name, value in items.items():
            if name not in entry:  # the first answer of an item stands
                entry[name] = value
                self._held += _string_length(value)
        if self._held > self._max_held:
            raise ProtocolViolation(
                f"the server sent {self._held} bytes of messages without all their items"
            )
        if (
            (b"UID" in entry or self._only is not None)
            and (self._body_item is None or self._body_item in entry)
            and (not self._metadata or entry.keys() >= _META_ITEMS)
        ):
            yield from self._take(number)

    def _take(self, number: int) -> Iterator[Fetched]:
        entry = self._partial.pop(number)
        self._held -= _held_in(entry)
        uid = _number(entry.get(b"UID")) if b"UID" in entry else self._only
        if uid is None:
            return
        size = _number(entry.get(b"RFC822.SIZE"))
        date, flags = entry.get(b"INTERNALDATE"), entry.get(b"FLAGS")
        meta = MessageMeta(
            uid,
            size or 0,
            parse_internaldate(date) if isinstance(date, bytes) else None,
            _seen(flags),
        )
        if self._body_item is None:
            found = self._finish(meta, None)
        else:
            found = self._finish(meta, self._body(uid, entry))
        if found is not None:
            yield found

    def _body(self, uid: int, entry: dict[bytes, Value]) -> bytes | None:
        """The message's bytes, or None with the problem noted."""
        item = self._body_item or b""
        name = item.decode()
        if item in entry:
            body = entry[item]
        elif item == b"BODY[]<0>" and b"BODY[]" in entry:
            body = entry[b"BODY[]"]  # a server that ignores the partial range: all of it
        else:
            others = ", ".join(sorted(n.decode() for n in entry if n != b"UID")) or "nothing"
            self._problem(uid, f"the server's answer had no {name} (only {others})")
            return None
        if body is None:
            self._problem(uid, f"the server answered {name} NIL")
            return None
        if isinstance(body, list | Atom):
            self._problem(uid, f"the server answered {name} with something other than a string")
            return None
        return body

    def _problem(self, uid: int, text: str) -> None:
        if self._wants(uid):
            self.report.problems.setdefault(uid, text)

    def _wants(self, uid: int) -> bool:
        return (self._wanted is None or uid in self._wanted) and uid not in self.report.delivered

    def _finish(self, meta: MessageMeta, body: bytes | None) -> Fetched | None:
        if not self._wants(meta.uid):
            return None  # unsolicited, or a second answer for the same message
        if self._body_item is not None and body is None:
            return None
        if body is not None and not body and meta.size > 0:
            name = self._body_item.decode() if self._body_item else "body"
            self._problem(
                meta.uid, f"the server sent an empty {name} for a message of {meta.size} bytes"
            )
            return None
        self.report.delivered.add(meta.uid)
        self.report.problems.pop(meta.uid, None)
        if body is not None and not meta.size:
            meta = meta._replace(size=len(body))
        return Fetched(meta, body)

    def _leftovers(self) -> Iterator[Fetched]:
        """At the tagged reply: what came for each message not handed on yet. A message with
        its body but not all its metadata is handed on with what came; one without its body
        is a problem (see ``_body``)."""
        for number in sorted(self._partial):
            entry = self._partial[number]
            if b"UID" in entry or (self._only is not None and len(entry) > 1):
                yield from self._take(number)
            else:
                del self._partial[number]

    def _expunge(self, number: int) -> None:
        """``* n EXPUNGE``: message n is gone and every later one moves down by one."""
        gone = self._partial.pop(number, None)
        if gone is not None:
            self._held -= _held_in(gone)
            uid = _number(gone.get(b"UID"))
            if uid is not None:
                self.report.expunged.add(uid)
        if any(n > number for n in self._partial):
            self._partial = {(n - 1 if n > number else n): e for n, e in self._partial.items()}


_META_ITEMS = frozenset((b"RFC822.SIZE", b"INTERNALDATE", b"FLAGS"))


def _string_length(value: Value) -> int:
    return len(value) if isinstance(value, bytes) and not isinstance(value, Atom) else 0


def _held_in(entry: dict[bytes, Value]) -> int:
    return sum(_string_length(value) for value in entry.values())


def _seen(flags: Value) -> bool:
    return isinstance(flags, list) and any(
        isinstance(flag, bytes) and flag.lower() == _SEEN_LOWER for flag in flags
    )
