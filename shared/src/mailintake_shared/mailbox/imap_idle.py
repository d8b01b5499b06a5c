"""One IMAP session that watches one folder with IDLE (RFC 2177), on asyncio: a watcher
holds thousands of them in one thread, each costing a socket and a few objects while idle.

The session follows the rules of every other IMAP session of the project (``imap.py``): the
socket goes through the outbound guard (``network.py``), TLS verifies the server with the
connection's context, STARTTLS fails closed, a ``PREAUTH`` greeting is taken as it is (and
refused with STARTTLS), a password goes by SASL PLAIN (RFC 4616, UTF-8; with an authorization
identity for a shared mailbox) where the server offers it, else by LOGIN (ASCII only), or
XOAUTH2 with the connection's access token, refreshed once when the server refuses it.
Responses are read by RFC 3501's grammar (``imap_wire``), each in bounded memory, and each
answer whole within the connection's time-out, however many untagged responses come first
(a server that chatters without answering would otherwise hold the session, and one of the
watcher's few places for setting sessions up, for ever). Failures leave as ``PollError``
(``errors.classify``), the same taxonomy as a poll's, without the secret in any form the
server could have quoted back (``MailboxConfig.scrub``).

The folder is opened with ``EXAMINE`` (read-only: the watch changes nothing, not even
``\\Recent``). ``IDLE`` then runs in rounds: each ends with ``DONE`` after ``renew_s`` (RFC
2177 asks for less than 29 minutes) and waits for the tagged ``OK`` within the connection's
time-out, which also proves the session alive. An ``EXISTS`` above the count known so far is
new mail; ``EXPUNGE`` and flag changes are not (a poll's own ``\\Seen`` would otherwise call
for the next poll).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Self

from imapclient import imap_utf7
from imapclient.exceptions import IMAPClientError, LoginError

from mailintake_shared.domain import Encryption
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import (
    FolderMissingError,
    PollError,
    StartTlsUnavailableError,
    classify,
)
from mailintake_shared.mailbox.imap import FolderInfo
from mailintake_shared.mailbox.imap_wire import (
    ProtocolViolation,
    Response,
    ServerClosed,
    literal_size,
    parse_values,
)

# Untagged lines of an idle folder are short; a literal in one (rare) is bounded too, and so
# is a whole response (a thousand literals just under the limit would be a gigabyte).
_LINE_LIMIT = 64 * 1024
_MAX_RESPONSE = 1024 * 1024


class IdleUnsupportedError(Exception):
    """The server does not offer IDLE (no ``IDLE`` capability, or it refused the command):
    the folder can only be polled."""


class IdleSession:
    """An authenticated session with one folder examined; ``idle`` watches it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout_s
        self._tags = 0
        self.capabilities: frozenset[bytes] = frozenset()
        self.exists = 0

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    async def open(cls, config: MailboxConfig) -> Self:
        """Connect, STARTTLS when asked, log in; raises ``PollError`` with the failed step."""
        view = config.view
        host, port, timeout = config.address
        session: Self | None = None
        try:
            sock = await _guarded_socket(config, host, port, timeout)
            implicit = view.encryption is Encryption.SSL
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    sock=sock,
                    ssl=config.tls_context() if implicit else None,
                    server_hostname=host if implicit else None,
                    limit=_LINE_LIMIT,
                ),
                timeout,
            )
            session = cls(reader, writer, timeout)
            preauth = await session._greeting()
            if view.encryption is Encryption.STARTTLS:
                if preauth:
                    raise PollError(
                        ErrorKind.STARTTLS_UNAVAILABLE,
                        "the server greeted with PREAUTH, after which STARTTLS is not "
                        "possible; refusing to continue in plain text",
                    )
                await session._starttls(config, host)
            if not preauth:
                await session._login(config)
            await session._command(b"CAPABILITY")
            return session
        except Exception as exc:
            if session is not None:
                await session.close()
            error = classify(exc)
            raise PollError(error.kind, config.scrub(str(error))) from exc

    async def _greeting(self) -> bool:
        """True when the server greets with ``PREAUTH``; ``BYE`` ends the session."""
        response = await self._read(self._timeout)
        word = response.text[2:].split(b" ", 1)[0].upper()
        if word == b"BYE":
            raise ServerClosed(_words(response))
        self._note_capabilities(response)
        return word == b"PREAUTH"

    async def _starttls(self, config: MailboxConfig, host: str) -> None:
        if not self.capabilities:
            await self._command(b"CAPABILITY")
        if b"STARTTLS" not in self.capabilities:
            raise StartTlsUnavailableError()
        await self._command(b"STARTTLS")
        context = config.tls_context()
        assert context is not None  # starttls always has one
        await asyncio.wait_for(self._writer.start_tls(context, server_hostname=host), self._timeout)
        # Bytes read before the handshake stay in the reader's buffer, and a server says
        # nothing after it until asked: any there came in plain text, from whoever can write
        # to the link (RFC 3207 §4.2). asyncio offers no public way to look.
        if getattr(self._reader, "_buffer", None):
            raise PollError(
                ErrorKind.TLS,
                "the server sent plain text after its OK to STARTTLS, before TLS began (a man "
                "in the middle injecting answers?); refusing to read it as protected",
            )
        self.capabilities = frozenset()  # forgotten: asked again over TLS (RFC 3501 §6.2.1)

    async def _login(self, config: MailboxConfig) -> None:
        view, shared = config.view, config.view.shared_mailbox
        if config.access_token is None:
            if not self.capabilities:
                await self._command(b"CAPABILITY")
            if shared or b"AUTH=PLAIN" in self.capabilities:
                plain = f"{shared or ''}\0{view.username}\0{config.secret}".encode()
                await self._authenticate(b"PLAIN", plain)
            elif not (view.username + config.secret).isascii():
                raise PollError(
                    ErrorKind.AUTHENTICATION,
                    "the server does not offer AUTHENTICATE PLAIN, and its LOGIN command carries "
                    "only ASCII: this user name or password cannot be sent to it",
                )
            else:
                await self._command(
                    b"LOGIN " + _astring(view.username) + b" " + _astring(config.secret),
                    login=True,
                )
            return
        user = shared or view.username
        loop = asyncio.get_running_loop()
        for refresh in (False, True):  # a refused token is refreshed once
            token = await loop.run_in_executor(None, config.access_token, refresh)
            xoauth2 = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
            try:
                await self._authenticate(b"XOAUTH2", xoauth2)
                return
            except LoginError:
                if refresh:
                    raise

    async def _authenticate(self, mechanism: bytes, response: bytes) -> None:
        """``AUTHENTICATE`` with one client response (RFC 3501 §6.2.2); a server challenge
        after it (XOAUTH2's error report) is answered empty, and the tagged NO follows."""
        tag = self._send(b"AUTHENTICATE " + mechanism)
        answered = False
        async with asyncio.timeout(self._timeout):  # the whole answer, however chatty
            while True:
                reply = await self._read(self._timeout)
                if reply.text[:1] == b"+":
                    self._writer.write(
                        b"\r\n" if answered else base64.b64encode(response) + b"\r\n"
                    )
                    answered = True
                elif reply.tag == tag:
                    self._check(reply, login=True)
                    self._note_capabilities(reply)
                    return
                else:
                    self._untagged(reply, None)

    # --- the folder ---------------------------------------------------------------------------
    async def examine(self, folder: str) -> FolderInfo:
        """``EXAMINE`` the folder (RFC 3501 §6.3.2); raises ``FolderMissingError``,
        ``IdleUnsupportedError`` when the server has no IDLE capability."""
        if b"IDLE" not in self.capabilities:
            raise IdleUnsupportedError("the server does not offer IDLE (RFC 2177)")
        tag = self._send(b"EXAMINE " + _astring(imap_utf7.encode(folder).decode("ascii")))
        uidvalidity = uidnext = None
        async with asyncio.timeout(self._timeout):  # the whole answer, however chatty
            while True:
                reply = await self._read(self._timeout)
                if reply.tag == tag:
                    break
                code = _response_code(reply)
                if code[:1] == [b"UIDVALIDITY"] and len(code) > 1:
                    uidvalidity = int(code[1])
                elif code[:1] == [b"UIDNEXT"] and len(code) > 1:
                    uidnext = int(code[1])
                self._untagged(reply, None)
        if not _ok(reply):
            raise FolderMissingError(folder)
        if uidvalidity is None:
            raise PollError(
                ErrorKind.SERVER_ERROR,
                f"the server's EXAMINE of {folder!r} gave no UIDVALIDITY (RFC 3501 requires it)",
            )
        return FolderInfo(uidvalidity=uidvalidity, exists=self.exists, uidnext=uidnext)

    async def idle(
        self,
        renew_s: float,
        new_mail: Callable[[], None],
        idling: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """One round of ``IDLE``: ``idling`` is awaited once the server accepted it, and
        ``new_mail`` called for each ``EXISTS`` that raises the folder's count; after
        ``renew_s`` seconds ``DONE`` ends it and the tagged answer must come within the
        time-out. Raises ``IdleUnsupportedError`` when the server refuses IDLE,
        ``PollError`` when the session breaks."""
        try:
            tag = self._send(b"IDLE")
            async with asyncio.timeout(self._timeout):  # the whole wait, however chatty
                while True:  # the continuation request; updates may come first
                    reply = await self._read(self._timeout)
                    if reply.text[:1] == b"+":
                        break
                    if reply.tag == tag:
                        raise IdleUnsupportedError(f"the server refused IDLE: {_words(reply)}")
                    self._untagged(reply, new_mail)
            if idling is not None:
                await idling()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + renew_s
            while (remaining := deadline - loop.time()) > 0:
                try:
                    reply = await self._read(remaining)
                except TimeoutError:
                    break
                if reply.tag == tag:  # the server ended IDLE by itself: a new round
                    self._check(reply)
                    return
                self._untagged(reply, new_mail)
            self._writer.write(b"DONE\r\n")
            async with asyncio.timeout(self._timeout):  # the whole answer, however chatty
                while (reply := await self._read(self._timeout)).tag != tag:
                    self._untagged(reply, new_mail)
            self._check(reply)
        except IdleUnsupportedError:
            raise
        except Exception as exc:
            raise classify(exc) from exc

    async def close(self) -> None:
        """``LOGOUT`` (briefly waited for), then the socket closed."""
        with contextlib.suppress(Exception):
            self._send(b"LOGOUT")
            await asyncio.wait_for(self._writer.drain(), 1.0)
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    # --- the wire -----------------------------------------------------------------------------
    def _send(self, command: bytes) -> bytes:
        self._tags += 1
        tag = b"W%d" % self._tags
        self._writer.write(tag + b" " + command + b"\r\n")
        return tag

    async def _command(self, command: bytes, *, login: bool = False) -> Response:
        """Send ``command`` and read up to its tagged reply; untagged replies are noted."""
        tag = self._send(command)
        async with asyncio.timeout(self._timeout):  # the whole answer, however chatty
            while (reply := await self._read(self._timeout)).tag != tag:
                self._untagged(reply, None)
        self._check(reply, login=login)
        self._note_capabilities(reply)
        return reply

    async def _read(self, timeout_s: float) -> Response:
        """One whole response (RFC 3501 §7). Waiting for its first line may time out
        (``TimeoutError``; nothing is lost, the line stays in the buffer); the rest of a
        response must come within the connection's time-out."""
        try:
            async with asyncio.timeout(timeout_s):  # no task of its own, unlike wait_for
                line = await self._reader.readline()
        except ValueError as exc:  # asyncio.LimitOverrunError is one
            raise ProtocolViolation(f"a response line over {_LINE_LIMIT} bytes") from exc
        async with asyncio.timeout(self._timeout):
            return await self._rest(line)

    async def _rest(self, line: bytes) -> Response:
        text, literals, total = b"", list[bytes](), 0
        while True:
            if not line.endswith(b"\n"):
                raise ServerClosed("the server closed the connection")
            size = literal_size(line)
            total += len(line) + (size or 0)
            if total > _MAX_RESPONSE:
                raise ProtocolViolation(f"a response of more than {_MAX_RESPONSE} bytes")
            if size is None:
                return Response(text + line.rstrip(b"\r\n"), tuple(literals))
            text += line[: line.rindex(b"}") + 1]
            literals.append(await self._reader.readexactly(size))
            line = await self._reader.readline()

    def _check(self, reply: Response, *, login: bool = False) -> None:
        if not _ok(reply):
            words = _words(reply)
            raise LoginError(words) if login else IMAPClientError(words)

    def _untagged(self, reply: Response, new_mail: Callable[[], None] | None) -> None:
        text = reply.text
        if text[:2] != b"* ":
            return
        words = text[2:].split(b" ", 2)
        kind = words[1].upper() if len(words) > 1 else b""
        if words[0].upper() == b"BYE":
            raise ServerClosed(_words(reply))
        if words[0].upper() == b"CAPABILITY":
            self.capabilities = _capability_set(tuple(text[2:].split()[1:]))
        elif kind == b"EXISTS" and words[0].isdigit():
            if len(words[0]) > 10:  # RFC 3501 §9: a number is 32-bit
                raise ProtocolViolation(f"an EXISTS count of {len(words[0])} digits")
            count = int(words[0])
            if count > self.exists and new_mail is not None:
                new_mail()
            self.exists = count
        elif kind == b"EXPUNGE" and self.exists:
            self.exists -= 1
        else:
            self._note_capabilities(reply)

    def _note_capabilities(self, reply: Response) -> None:
        code = _response_code(reply)
        if code[:1] == [b"CAPABILITY"]:
            self.capabilities = _capability_set(tuple(bytes(word) for word in code[1:]))


@functools.lru_cache(maxsize=256)
def _capability_set(words: tuple[bytes, ...]) -> frozenset[bytes]:
    """The capabilities, upper-cased; one set shared by every session that was sent the same
    list (a server's forty words kept once, not once per watched mailbox: 4 KB each)."""
    return frozenset(word.upper() for word in words)


async def _guarded_socket(
    config: MailboxConfig, host: str, port: int, timeout: float
) -> socket.socket:
    """A connected socket to one of the host's addresses, each checked by the outbound guard
    (resolved once, in a thread: ``getaddrinfo`` blocks)."""
    loop = asyncio.get_running_loop()
    addresses = await loop.run_in_executor(None, config.network.resolve, host, port)
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            return sock
        except OSError as exc:  # TimeoutError is one
            sock.close()
            error = exc
    raise error or OSError(f"{host} has no address")


def _response_code(reply: Response) -> list[bytes]:
    """The atoms of a status response's code (RFC 3501 §7.1): ``* OK [UIDNEXT 12] …`` →
    [UIDNEXT, 12]; empty when the response has none."""
    parts = reply.text.split(b" ", 2)
    if len(parts) < 3 or not parts[2].startswith(b"[") or b"]" not in parts[2]:
        return []
    try:
        words = parse_values(parts[2][1 : parts[2].index(b"]")])
    except ProtocolViolation:
        return []
    return [bytes(word).upper() for word in words if isinstance(word, bytes)]


def _ok(reply: Response) -> bool:
    """A tagged ``OK`` (status words are case-insensitive, RFC 3501 §9)."""
    words = reply.text.split(b" ", 2)
    return len(words) > 1 and words[1].upper() == b"OK"


def _words(reply: Response) -> str:
    return reply.text.decode("utf-8", "replace")


def _astring(value: str) -> bytes:
    """A quoted string (RFC 3501 §4.3), UTF-8 encoded; a value with NUL, CR or LF (which a
    quoted string cannot hold) is refused."""
    data = value.encode("utf-8")
    if any(byte in (0, 10, 13) for byte in data):
        raise PollError(ErrorKind.INTERNAL, "a name with a control character cannot be sent")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
