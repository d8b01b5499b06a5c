"""The tests' own scripted IMAP and POP3 server: RFC 3501 / RFC 1939 by default, with one
switchable behaviour for each odd but legal (or plainly wrong) answer real servers give.

It runs on 127.0.0.1 and a free port, an asyncio loop in a thread of the test process, over
one mailbox that the test fills and reads directly (``QuirkMailbox``). The behaviours
(``ImapQuirks``, ``Pop3Quirks``) are set on the server and apply to the next commands:

IMAP: ``BODY[] NIL`` for a message that is there (a damaged item, Exchange) or that another
session expunged meanwhile (Dovecot's ``OK [EXPUNGEISSUED]``); an empty literal for a message
whose RFC822.SIZE is not 0; a FETCH answer without ``BODY[]``; ``UID SEARCH UID n:*`` that
finds nothing and ``UID SEARCH UID *`` answered BAD (GNU Mailutils 3.15); no UIDPLUS; a
``PREAUTH`` greeting; ``* BYE`` in the middle of a FETCH; items in another order, strings as
literals, one message's items split over several responses in any order, unsolicited
responses between them; a tagged NO for some messages; SELECT without UIDNEXT; an
RFC822.SIZE that is only approximate; a partial fetch answered whole; no IDLE capability;
EXPUNGE responses in the middle of a FETCH answer; IDLE refused, or ended by the server at
once. And hostile ones: UIDs listed that the folder never had (or outside 1..2^32-1); FETCH
answers sent one byte at a time, or without end; byte ranges of a message that never ends; a
literal of gigabytes announced; ``* BYE`` at any step; STARTTLS answered OK and then plain
text (a man in the middle stripping TLS); an IDLE that never gets its "+", that floods
EXISTS, or whose "+" is followed by anything. Both ports speak implicit TLS when the server
is given a context.

POP3: several messages under one UIDL; 8-bit mail rewritten unless the client sends ``UTF8``
(Courier); ``-ERR`` to RETR of some messages; ``-ERR [IN-USE]`` to PASS; no UIDL; the
connection closed in the middle of a RETR; a RETR that never ends.

Every command the server received is kept (``commands``), so a test can also check what the
client did not send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import threading
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mailintake_devstack.broker import free_port
from mailintake_shared.mailbox.imap_wire import Value, parse_values


@dataclass
class Stored:
    """One message on the server."""

    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)
    internal_date: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    uidl: str = ""


@dataclass
class QuirkMailbox:
    """The one folder (INBOX) and POP3 maildrop the server serves."""

    uidvalidity: int = 1000
    next_uid: int = 1
    messages: list[Stored] = field(default_factory=list)

    def append(self, raw: bytes, *, flags: Iterable[str] = (), when: datetime | None = None) -> int:
        uid = self.next_uid
        self.next_uid += 1
        stored = Stored(uid, raw, set(flags), uidl=f"U{uid:08d}")
        if when is not None:
            stored.internal_date = when
        self.messages.append(stored)
        return uid

    def by_uid(self, uid: int) -> Stored | None:
        return next((m for m in self.messages if m.uid == uid), None)

    def remove(self, uid: int) -> None:
        self.messages = [m for m in self.messages if m.uid != uid]

    @property
    def uids(self) -> list[int]:
        return [m.uid for m in self.messages]


@dataclass
class ImapQuirks:
    body_nil: set[int] = field(default_factory=set)  # answered BODY[] NIL, still there
    expunged_meanwhile: set[int] = field(default_factory=set)  # gone when FETCH comes
    empty_literal: set[int] = field(default_factory=set)  # {0} with the real RFC822.SIZE
    no_body_item: set[int] = field(default_factory=set)  # a FETCH answer without BODY[]
    left_out: set[int] = field(default_factory=set)  # not answered; tagged NO at the end
    bye_at: int | None = None  # * BYE and the connection closed when FETCH reaches it
    search_blind: bool = False  # UID SEARCH UID n:* finds nothing; UID SEARCH UID * is BAD
    no_uidplus: bool = False
    preauth: bool = False
    no_uidnext: bool = False
    shuffled_items: bool = False  # items in another order
    literals: bool = False  # every string as a literal
    split_items: bool = False  # each message's items over two responses, out of order
    unsolicited: bool = False  # EXISTS, RECENT, flag updates between the responses
    size_off: int = 0  # RFC822.SIZE (and SEARCH LARGER) this much off the real size
    partial_whole: bool = False  # BODY[]<o.l> answered with the whole BODY[]
    no_idle: bool = False  # IDLE not in the capabilities (the server cannot announce mail)
    no_auth_plain: bool = False  # no AUTH=PLAIN: LOGIN only
    select_refused: bytes | None = None  # SELECT/EXAMINE of INBOX answered with this NO text
    echo_credentials: bool = False  # a refused login quotes what the client sent
    # --- hostile ----------------------------------------------------------------------------
    search_extra: set[int] = field(default_factory=set)  # listed by UID SEARCH, never held
    trickle: float | None = None  # FETCH answers sent one byte at a time, this many s apart
    endless_fetch: bool = False  # a FETCH answer that never ends (untagged lines, no reply)
    huge_literal: int | None = None  # SELECT answers a literal of this size, then hangs up
    endless_body: set[int] = field(default_factory=set)  # every byte range answered full
    bye_on: str | None = None  # "GREETING" or a command (LOGIN, SELECT, …): * BYE, hang up
    bye_words: bytes = b"the server is shutting down"  # what that BYE says
    starttls_plain: bool = False  # STARTTLS offered, answered OK, and then plain text goes on
    expunge_in_fetch: set[int] = field(default_factory=set)  # expunged by another session
    #   in the middle of the FETCH answer, once the message before it was sent
    # IDLE (RFC 2177): "+", then "* n EXISTS" whenever the folder grows, until DONE; or:
    idle_answer: bytes | None = None  # IDLE answered with this tagged status (BAD, NO)
    idle_silent: bool = False  # IDLE gets no "+", nor any answer at all
    idle_says: bytes = b""  # sent right after the "+" of each IDLE
    idle_ends_at_once: bool = False  # each IDLE ended by the server as soon as it began
    idle_flood: bool = False  # "* n EXISTS", n ever rising, 5,000 a second while idling


@dataclass
class Pop3Quirks:
    same_uidl: dict[int, str] = field(default_factory=dict)  # UID → the UIDL it is listed under
    utf8_rewrite: bool = False  # 8-bit mail rewritten into a wrapper unless UTF8 was sent
    retr_refused: set[int] = field(default_factory=set)  # UIDs whose RETR answers -ERR
    in_use: bool = False  # PASS answers -ERR [IN-USE]
    no_uidl: bool = False
    close_in_retr: int | None = None  # UID whose RETR is cut in the middle
    no_sasl: bool = False  # no SASL PLAIN: USER and PASS only
    echo_credentials: bool = False  # a refused login quotes what the client sent
    # --- hostile ----------------------------------------------------------------------------
    endless_retr: set[int] = field(default_factory=set)  # UIDs whose RETR never ends


class QuirkServer:
    """IMAP and POP3 on two free loopback ports, one user, one mailbox."""

    def __init__(
        self,
        username: str = "user@example.com",
        password: str = "secret",
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: both ports speak implicit TLS with this context (IMAPS, POP3S)."""
        self.username, self.password = username, password
        self._tls = tls
        self.mailbox = QuirkMailbox()
        self.imap = ImapQuirks()
        self.pop3 = Pop3Quirks()
        self.commands: list[str] = []  # every command line received, in order
        self.received = bytearray()  # every byte received, IMAP and POP3
        self.imap_port, self.pop3_port = free_port(), free_port()
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._clients: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> QuirkServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=10)
        return self

    async def _listen(self) -> None:
        self._servers = [
            await asyncio.start_server(self._imap, "127.0.0.1", self.imap_port, ssl=self._tls),
            await asyncio.start_server(self._pop3, "127.0.0.1", self.pop3_port, ssl=self._tls),
        ]

    def stop(self) -> None:
        """Stop listening and drop every open session, as a server going down does (a
        client then sees the connection end, rather than waiting for its time-out)."""

        async def close() -> None:
            for server in self._servers:
                server.close()
            for writer in self._clients:
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> QuirkServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- sessions -------------------------------------------------------------------------
    async def _imap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(_ImapSession(self, reader, writer).run(), writer)

    async def _pop3(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(_Pop3Session(self, reader, writer).run(), writer)

    async def _serve(
        self, session: Coroutine[Any, Any, None], writer: asyncio.StreamWriter
    ) -> None:
        self._clients.add(writer)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, _Closed):
                await session
        finally:
            self._clients.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


class _Closed(Exception):  # noqa: N818
    """The server ends the session on purpose."""


_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n\Z")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _word(value: Value) -> bytes:
    """A command argument as bytes (an atom or a string; a list or NIL gives nothing)."""
    return bytes(value) if isinstance(value, bytes) else b""


def _date_text(when: datetime) -> bytes:
    return f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year} {when:%H:%M:%S} +0000".encode()


class _ImapSession:
    def __init__(
        self, server: QuirkServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.authenticated = False
        self.selected = False
        self.readonly = False

    @property
    def box(self) -> QuirkMailbox:
        return self.server.mailbox

    @property
    def quirks(self) -> ImapQuirks:
        return self.server.imap

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: bytes) -> None:
        """``send``, one byte at a time when the server trickles."""
        pause = self.quirks.trickle
        if pause is None:
            await self.send(data)
            return
        for index in range(len(data)):
            await self.send(data[index : index + 1])
            await asyncio.sleep(pause)

    async def bye(self) -> None:
        await self.send(b"* BYE " + self.quirks.bye_words + b"\r\n")
        raise _Closed()

    def capabilities(self) -> bytes:
        words = ["IMAP4rev1", "LITERAL+", "ENABLE", "ID"]
        if not self.quirks.no_idle:
            words.append("IDLE")
        if not self.quirks.no_auth_plain:
            words.append("AUTH=PLAIN")
        if not self.quirks.no_uidplus:
            words.append("UIDPLUS")
        if self.quirks.starttls_plain:
            words.append("STARTTLS")
        return " ".join(words).encode()

    async def run(self) -> None:
        if self.quirks.bye_on == "GREETING":
            await self.bye()
        if self.quirks.preauth:
            self.authenticated = True
            await self.send(b"* PREAUTH [CAPABILITY " + self.capabilities() + b"] ready\r\n")
        else:
            await self.send(b"* OK [CAPABILITY " + self.capabilities() + b"] quirk server\r\n")
        while True:
            line = await self._command_line()
            if line is None:
                return
            text, literals = line
            self.server.commands.append(text.decode("utf-8", "replace"))
            values = parse_values(text, literals)
            if len(values) < 2:
                await self.send(b"* BAD empty command\r\n")
                continue
            tag = _word(values[0])
            command = _word(values[1]).upper()
            arguments = values[2:]
            if command == b"UID" and arguments:
                command = b"UID " + _word(arguments[0]).upper()
                arguments = arguments[1:]
            if self.quirks.bye_on and command.decode().endswith(self.quirks.bye_on):
                await self.bye()
            handler = _IMAP_COMMANDS.get(command)
            if handler is None:
                await self.send(tag + b" BAD unknown command\r\n")
                continue
            await handler(self, tag, arguments)

    async def _command_line(self) -> tuple[bytes, tuple[bytes, ...]] | None:
        """A command with its literals (the client waits for ``+`` before each one)."""
        text, literals = b"", list[bytes]()
        while True:
            line = await self.reader.readline()
            self.server.received += line
            if not line:
                return None
            marker = _LITERAL.search(line)
            if marker is None:
                return text + line.rstrip(b"\r\n"), tuple(literals)
            if not marker.group(2):
                await self.send(b"+ go ahead\r\n")
            text += line[: marker.start()] + b"{%s}" % marker.group(1)
            literals.append(await self.reader.readexactly(int(marker.group(1))))
            self.server.received += literals[-1]

    # --- commands ----------------------------------------------------------------------------
    async def capability(self, tag: bytes, _: list[Value]) -> None:
        await self.send(b"* CAPABILITY " + self.capabilities() + b"\r\n" + tag + b" OK done\r\n")

    async def starttls(self, tag: bytes, _: list[Value]) -> None:
        """What a man in the middle that strips TLS answers: OK, and plain text after it."""
        await self.send(tag + b" OK Begin TLS negotiation now\r\n* OK still plain text\r\n")

    async def noop(self, tag: bytes, _: list[Value]) -> None:
        await self.send(tag + b" OK done\r\n")

    async def login(self, tag: bytes, arguments: list[Value]) -> None:
        user, password = (_word(a).decode() for a in arguments[:2])
        await self._authenticated(tag, user, password, self.server.commands[-1].encode())

    async def authenticate(self, tag: bytes, arguments: list[Value]) -> None:
        if _word(arguments[0]).upper() != b"PLAIN":
            await self.send(tag + b" NO [CANNOT] only PLAIN\r\n")
            return
        if len(arguments) > 1:
            response = _word(arguments[1])
        else:
            await self.send(b"+ \r\n")
            line = await self.reader.readline()
            self.server.received += line
            response = line.strip()
        self.server.commands.append("AUTHENTICATE PLAIN <response>")
        try:
            _, user, password = base64.b64decode(response).decode().split("\0")
        except ValueError:
            await self.send(tag + b" BAD malformed\r\n")
            return
        await self._authenticated(tag, user, password, response)

    async def _authenticated(self, tag: bytes, user: str, password: str, sent: bytes) -> None:
        if (user, password) != (self.server.username, self.server.password):
            said = b" (" + sent + b")" if self.quirks.echo_credentials else b""
            await self.send(
                tag + b" NO [AUTHENTICATIONFAILED] Authentication failed." + said + b"\r\n"
            )
            return
        self.authenticated = True
        await self.send(tag + b" OK [CAPABILITY " + self.capabilities() + b"] Logged in\r\n")

    async def logout(self, tag: bytes, _: list[Value]) -> None:
        await self.send(b"* BYE logging out\r\n" + tag + b" OK done\r\n")
        raise _Closed()

    async def list_(self, tag: bytes, arguments: list[Value]) -> None:
        pattern = _word(arguments[1]) if len(arguments) > 1 else b""
        found = (
            b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
            if pattern.upper()
            in (
                b"INBOX",
                b"*",
                b"%",
            )
            else b""
        )
        await self.send(found + tag + b" OK done\r\n")

    async def select(self, tag: bytes, arguments: list[Value], *, readonly: bool = False) -> None:
        if _word(arguments[0]).upper() != b"INBOX":
            await self.send(tag + b" NO [NONEXISTENT] no such folder\r\n")
            return
        if self.quirks.select_refused is not None:
            await self.send(tag + b" NO " + self.quirks.select_refused + b"\r\n")
            return
        self.selected, self.readonly = True, readonly
        if self.quirks.huge_literal is not None:
            await self.send(b"* OK [ALERT] {%d}\r\nthe rest never comes" % self.quirks.huge_literal)
            raise _Closed()
        lines = [
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            b"* %d EXISTS" % len(self.box.messages),
            b"* 0 RECENT",
            b"* OK [UIDVALIDITY %d] UIDs valid" % self.box.uidvalidity,
        ]
        if not self.quirks.no_uidnext:
            lines.append(b"* OK [UIDNEXT %d] Predicted next UID" % self.box.next_uid)
        mode = b"READ-ONLY" if readonly else b"READ-WRITE"
        await self.send(b"\r\n".join(lines) + b"\r\n" + tag + b" OK [" + mode + b"] done\r\n")

    async def examine(self, tag: bytes, arguments: list[Value]) -> None:
        await self.select(tag, arguments, readonly=True)

    async def close(self, tag: bytes, _: list[Value]) -> None:
        self.selected = False
        await self.send(tag + b" OK done\r\n")

    async def enable(self, tag: bytes, _: list[Value]) -> None:
        await self.send(b"* ENABLED\r\n" + tag + b" OK done\r\n")

    async def search(self, tag: bytes, arguments: list[Value], *, by_uid: bool = False) -> None:
        criteria = [_word(a).upper() for a in arguments]
        if by_uid and self.quirks.search_blind and criteria[:1] == [b"UID"]:
            if criteria[1:2] == [b"*"]:
                await self.send(tag + b" BAD Invalid search criterion\r\n")
                return
            if criteria[1].endswith(b":*"):
                await self.send(b"* SEARCH\r\n" + tag + b" OK done\r\n")
                return
        found = [m for m in self.box.messages if self._matches(m, criteria)]
        numbers = [m.uid if by_uid else self.box.messages.index(m) + 1 for m in found]
        if by_uid and criteria[:1] == [b"UID"]:
            numbers = sorted({*numbers, *self.quirks.search_extra})
        await self.send(
            b"* SEARCH" + b"".join(b" %d" % n for n in numbers) + b"\r\n" + tag + b" OK done\r\n"
        )

    def _matches(self, message: Stored, criteria: list[bytes]) -> bool:
        index = 0
        while index < len(criteria):
            word = criteria[index]
            if word == b"UID":
                if message.uid not in self._set(criteria[index + 1], by_uid=True):
                    return False
                index += 2
            elif word in (b"UNSEEN", b"SEEN", b"DELETED", b"UNDELETED"):
                flag = "\\Deleted" if b"DELETED" in word else "\\Seen"
                if (flag in message.flags) == word.startswith(b"UN"):
                    return False
                index += 1
            elif word == b"SINCE":
                day = datetime.strptime(criteria[index + 1].decode().title(), "%d-%b-%Y").date()
                if message.internal_date.date() < day:
                    return False
                index += 2
            elif word == b"LARGER":
                if len(message.raw) + self.quirks.size_off <= int(criteria[index + 1]):
                    return False
                index += 2
            else:  # ALL and anything else
                index += 1
        return True

    def _set(self, text: bytes, *, by_uid: bool) -> set[int]:
        """The UIDs (or sequence numbers) of an RFC 3501 sequence set; ``n:*`` includes the
        largest even when it is below n (§6.4.8)."""
        keys = self.box.uids if by_uid else list(range(1, len(self.box.messages) + 1))
        largest = max(keys, default=0)
        chosen: set[int] = set()
        for part in text.decode().split(","):
            low, _, high = part.partition(":")
            first = largest if low == "*" else int(low)
            last = first if not high else largest if high == "*" else int(high)
            first, last = min(first, last), max(first, last)
            chosen.update(k for k in keys if first <= k <= last)
        return chosen

    async def uid_search(self, tag: bytes, arguments: list[Value]) -> None:
        await self.search(tag, arguments, by_uid=True)

    async def fetch(self, tag: bytes, arguments: list[Value], *, by_uid: bool = False) -> None:
        wanted = self._set(_word(arguments[0]), by_uid=by_uid)
        items = arguments[1] if isinstance(arguments[1], list) else [arguments[1]]
        names = [_word(i).upper().replace(b"BODY.PEEK[", b"BODY[") for i in items]
        if by_uid and b"UID" not in names:
            names.insert(0, b"UID")
        while self.quirks.endless_fetch:  # until the client hangs up
            await self.send(b"* %d EXISTS\r\n" % len(self.box.messages))
            await asyncio.sleep(0.01)
        expunged: list[int] = []  # by another session: gone once this command is answered
        left_out = False
        self._numbers: dict[int, int] | None = None
        pending_split: list[tuple[Stored, bytes]] = []
        for message in list(self.box.messages):
            number = self._number(message)
            if number is None:
                continue  # expunged meanwhile (expunge_in_fetch)
            key = message.uid if by_uid else number
            if key not in wanted:
                continue
            if message.uid in self.quirks.expunged_meanwhile:
                expunged.append(message.uid)
                await self.trickle(
                    b"* %d FETCH (UID %d RFC822.SIZE 0 BODY[] NIL)\r\n" % (number, message.uid)
                )
                continue
            if self.quirks.bye_at == message.uid:
                await self.send(b"* BYE Internal error occurred. Refer to server log.\r\n")
                raise _Closed()
            if message.uid in self.quirks.left_out:
                left_out = True
                continue
            rendered = [r for r in (self._item(n, message) for n in names) if r is not None]
            if self.quirks.shuffled_items:
                rendered = rendered[::-1]
            if self.quirks.split_items and len(rendered) > 1:
                half = len(rendered) // 2
                await self.trickle(b"* %d FETCH (" % number + b" ".join(rendered[half:]) + b")\r\n")
                pending_split.append((message, b" ".join(rendered[:half])))
            else:
                await self.trickle(b"* %d FETCH (" % number + b" ".join(rendered) + b")\r\n")
            if self.quirks.unsolicited:
                await self.trickle(
                    b"* %d EXISTS\r\n* 0 RECENT\r\n* 1 FETCH (FLAGS (\\Recent))\r\n"
                    % len(self.box.messages)
                )
            await self._expunge_now()
        for message, first in reversed(pending_split):
            late = self._number(message)  # after any EXPUNGE meanwhile
            await self.trickle(b"* %d FETCH (" % (late or 0) + first + b")\r\n")
        for uid in expunged:
            self.box.remove(uid)
            self.quirks.expunged_meanwhile.discard(uid)
        if left_out:
            await self.trickle(tag + b" NO [SERVERBUG] Some messages could not be FETCHed\r\n")
        elif expunged:
            await self.trickle(tag + b" OK [EXPUNGEISSUED] Some messages were expunged\r\n")
        else:
            await self.trickle(tag + b" OK Fetch completed\r\n")

    def _number(self, message: Stored) -> int | None:
        """The message's sequence number now; None once it is expunged."""
        if self._numbers is None:
            self._numbers = {id(m): n for n, m in enumerate(self.box.messages, start=1)}
        return self._numbers.get(id(message))

    async def _expunge_now(self) -> None:
        """Another session expunges ``expunge_in_fetch`` (RFC 3501 §7.4.1 allows the EXPUNGE
        responses during a UID command); later messages move down."""
        for uid in sorted(self.quirks.expunge_in_fetch, reverse=True):
            message = self.box.by_uid(uid)
            if message is not None:
                await self.send(b"* %d EXPUNGE\r\n" % (self._number(message) or 0))
                self.box.remove(uid)
                self._numbers = None
        self.quirks.expunge_in_fetch.clear()

    def _string(self, data: bytes) -> bytes:
        if self.quirks.literals or not data or any(b < 0x20 or b > 0x7E for b in data):
            return b"{%d}\r\n" % len(data) + data
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'

    def _item(self, name: bytes, message: Stored) -> bytes | None:
        quirks = self.quirks
        if name == b"UID":
            return b"UID %d" % message.uid
        if name == b"RFC822.SIZE":
            return b"RFC822.SIZE %d" % max(0, len(message.raw) + quirks.size_off)
        if name == b"INTERNALDATE":
            return b"INTERNALDATE " + self._string(_date_text(message.internal_date))
        if name == b"FLAGS":
            return b"FLAGS (" + " ".join(sorted(message.flags)).encode() + b")"
        if name.startswith(b"BODY[]"):
            if message.uid in quirks.no_body_item:
                return None
            if message.uid in quirks.body_nil:
                return b"BODY[] NIL"
            if message.uid in quirks.empty_literal:
                return b"BODY[] {0}\r\n"
            partial = re.fullmatch(rb"BODY\[\]<(\d+)\.(\d+)>", name)
            if partial is None or quirks.partial_whole:
                return b"BODY[] {%d}\r\n" % len(message.raw) + message.raw
            start, length = int(partial.group(1)), int(partial.group(2))
            piece = message.raw[start : start + length]
            if message.uid in quirks.endless_body:  # never short: the message never ends
                piece = piece.ljust(length, b"X")
            return b"BODY[]<%d> {%d}\r\n" % (start, len(piece)) + piece
        return None

    async def uid_fetch(self, tag: bytes, arguments: list[Value]) -> None:
        await self.fetch(tag, arguments, by_uid=True)

    async def store(self, tag: bytes, arguments: list[Value], *, by_uid: bool = False) -> None:
        wanted = self._set(_word(arguments[0]), by_uid=by_uid)
        mode = _word(arguments[1]).upper()
        flags = arguments[2] if isinstance(arguments[2], list) else [arguments[2]]
        names = {_word(f).decode() for f in flags}
        out = b""
        for number, message in enumerate(self.box.messages, start=1):
            if (message.uid if by_uid else number) not in wanted:
                continue
            if mode.startswith(b"+"):
                message.flags |= names
            elif mode.startswith(b"-"):
                message.flags -= names
            else:
                message.flags = set(names)
            if not mode.endswith(b".SILENT"):
                out += b"* %d FETCH (FLAGS (%s))\r\n" % (
                    number,
                    " ".join(sorted(message.flags)).encode(),
                )
        await self.send(out + tag + b" OK done\r\n")

    async def uid_store(self, tag: bytes, arguments: list[Value]) -> None:
        await self.store(tag, arguments, by_uid=True)

    async def expunge(self, tag: bytes, _: list[Value], only: set[int] | None = None) -> None:
        out = b""
        for number in range(len(self.box.messages), 0, -1):
            message = self.box.messages[number - 1]
            if "\\Deleted" in message.flags and (only is None or message.uid in only):
                self.box.messages.pop(number - 1)
                out += b"* %d EXPUNGE\r\n" % number
        await self.send(out + tag + b" OK done\r\n")

    async def idle(self, tag: bytes, _: list[Value]) -> None:
        """RFC 2177: ``+``, then the folder's news until the client's ``DONE``."""
        quirks = self.quirks
        if quirks.idle_answer is not None:
            await self.send(tag + b" " + quirks.idle_answer + b" IDLE refused\r\n")
            return
        done = asyncio.ensure_future(self.reader.readline())
        try:
            if not quirks.idle_silent:
                await self.send(b"+ idling\r\n" + quirks.idle_says)
            if quirks.idle_ends_at_once:
                await self.send(tag + b" OK IDLE ended by the server\r\n")
                return
            known = len(self.box.messages)
            while not done.done():
                if quirks.idle_flood:
                    await self.send(b"".join(b"* %d EXISTS\r\n" % (known + i) for i in range(100)))
                    known += 100
                elif len(self.box.messages) > known:
                    known = len(self.box.messages)
                    await self.send(b"* %d EXISTS\r\n" % known)
                await asyncio.wait([done], timeout=0.02)
            line = done.result()
        finally:
            done.cancel()
        if not line:
            raise _Closed()
        self.server.commands.append(line.decode("utf-8", "replace").strip())
        await self.send(tag + b" OK Idle completed\r\n")

    async def uid_expunge(self, tag: bytes, arguments: list[Value]) -> None:
        if self.quirks.no_uidplus:
            await self.send(tag + b" BAD unknown command\r\n")
            return
        await self.expunge(tag, [], self._set(_word(arguments[0]), by_uid=True))


_IMAP_COMMANDS = {
    b"CAPABILITY": _ImapSession.capability,
    b"STARTTLS": _ImapSession.starttls,
    b"NOOP": _ImapSession.noop,
    b"LOGIN": _ImapSession.login,
    b"AUTHENTICATE": _ImapSession.authenticate,
    b"LOGOUT": _ImapSession.logout,
    b"LIST": _ImapSession.list_,
    b"SELECT": _ImapSession.select,
    b"EXAMINE": _ImapSession.examine,
    b"CLOSE": _ImapSession.close,
    b"ENABLE": _ImapSession.enable,
    b"SEARCH": _ImapSession.search,
    b"UID SEARCH": _ImapSession.uid_search,
    b"FETCH": _ImapSession.fetch,
    b"UID FETCH": _ImapSession.uid_fetch,
    b"STORE": _ImapSession.store,
    b"UID STORE": _ImapSession.uid_store,
    b"EXPUNGE": _ImapSession.expunge,
    b"UID EXPUNGE": _ImapSession.uid_expunge,
    b"IDLE": _ImapSession.idle,
}


class _Pop3Session:
    def __init__(
        self, server: QuirkServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.user: str | None = None
        self.authenticated = False
        self.utf8 = False
        self.deleted: set[int] = set()
        # The maildrop is fixed for the session (RFC 1939 §4: numbers stay as they were).
        self.listing: list[Stored] = []

    @property
    def quirks(self) -> Pop3Quirks:
        return self.server.pop3

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def run(self) -> None:
        await self.send(b"+OK quirk POP3 server ready\r\n")
        while True:
            line = await self.reader.readline()
            self.server.received += line
            if not line:
                return
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.server.commands.append(text if not text.upper().startswith("PASS") else "PASS …")
            word, _, rest = text.partition(" ")
            handler = getattr(self, f"cmd_{word.lower()}", None)
            if handler is None:
                await self.send(b"-ERR unknown command\r\n")
                continue
            await handler(rest)

    def uidl(self, message: Stored) -> str:
        return self.quirks.same_uidl.get(message.uid, message.uidl)

    async def cmd_capa(self, _: str) -> None:
        words = ["USER", "RESP-CODES", "AUTH-RESP-CODE", "UTF8 USER", "TOP"]
        if not self.quirks.no_sasl:
            words.append("SASL PLAIN")
        if not self.quirks.no_uidl:
            words.append("UIDL")
        await self.send(b"+OK\r\n" + "".join(w + "\r\n" for w in words).encode() + b".\r\n")

    async def cmd_utf8(self, _: str) -> None:
        self.utf8 = True
        await self.send(b"+OK UTF8 enabled\r\n")

    async def cmd_user(self, rest: str) -> None:
        self.user = rest
        await self.send(b"+OK\r\n")

    async def cmd_pass(self, rest: str) -> None:
        await self._login(self.user or "", rest, f"PASS {rest}")

    async def cmd_auth(self, rest: str) -> None:
        mechanism, _, initial = rest.partition(" ")
        if mechanism.upper() != "PLAIN":
            await self.send(b"-ERR unsupported\r\n")
            return
        if not initial:
            await self.send(b"+ \r\n")
            line = await self.reader.readline()
            self.server.received += line
            initial = line.decode().strip()
        try:
            _, user, password = base64.b64decode(initial).decode().split("\0")
        except ValueError:
            await self.send(b"-ERR malformed\r\n")
            return
        await self._login(user, password, initial)

    async def _login(self, user: str, password: str, sent: str) -> None:
        if (user, password) != (self.server.username, self.server.password):
            said = f" ({sent})" if self.quirks.echo_credentials else ""
            await self.send(f"-ERR [AUTH] Authentication failed.{said}\r\n".encode())
            return
        if self.quirks.in_use:
            await self.send(b"-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n")
            return
        self.authenticated = True
        self.listing = list(self.server.mailbox.messages)
        await self.send(b"+OK Logged in.\r\n")

    async def cmd_stat(self, _: str) -> None:
        size = sum(len(m.raw) for m in self.listing)
        await self.send(b"+OK %d %d\r\n" % (len(self.listing), size))

    async def cmd_list(self, _: str) -> None:
        lines = b"".join(b"%d %d\r\n" % (n, len(m.raw)) for n, m in enumerate(self.listing, 1))
        await self.send(b"+OK\r\n" + lines + b".\r\n")

    async def cmd_uidl(self, _: str) -> None:
        if self.quirks.no_uidl:
            await self.send(b"-ERR unknown command\r\n")
            return
        lines = b"".join(
            b"%d %s\r\n" % (n, self.uidl(m).encode()) for n, m in enumerate(self.listing, 1)
        )
        await self.send(b"+OK\r\n" + lines + b".\r\n")

    async def cmd_retr(self, rest: str) -> None:
        message = self.listing[int(rest) - 1]
        if message.uid in self.quirks.retr_refused:
            await self.send(b"-ERR Message is damaged and cannot be read\r\n")
            return
        if message.uid in self.quirks.endless_retr:  # until the client hangs up
            await self.send(b"+OK\r\n" + message.raw)
            while True:
                await self.send(b"X" * 998 + b"\r\n")
        raw = message.raw
        if self.quirks.utf8_rewrite and not self.utf8 and not raw.isascii():
            boundary = uuid.uuid4().hex.encode()
            raw = (
                b'Content-Type: multipart/mixed; boundary="'
                + boundary
                + b'"\r\n\r\n--'
                + boundary
                + b"\r\nContent-Type: text/plain\r\n\r\nThis message was rewritten."
                + b"\r\n--"
                + boundary
                + b"--\r\n"
            )
        stuffed = b"".join(
            (b"." + line if line.startswith(b".") else line) for line in raw.splitlines(True)
        )
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        if self.quirks.close_in_retr == message.uid:
            await self.send(b"+OK\r\n" + stuffed[: len(stuffed) // 2])
            raise _Closed()
        await self.send(b"+OK %d octets\r\n" % len(raw) + stuffed + b".\r\n")

    async def cmd_dele(self, rest: str) -> None:
        self.deleted.add(int(rest))
        await self.send(b"+OK deleted\r\n")

    async def cmd_noop(self, _: str) -> None:
        await self.send(b"+OK\r\n")

    async def cmd_rset(self, _: str) -> None:
        self.deleted.clear()
        await self.send(b"+OK\r\n")

    async def cmd_quit(self, _: str) -> None:
        for number in self.deleted:
            self.server.mailbox.remove(self.listing[number - 1].uid)
        await self.send(b"+OK bye\r\n")
        raise _Closed()


def since(day: date) -> datetime:
    """A datetime on ``day``, for messages that arrived that day."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
