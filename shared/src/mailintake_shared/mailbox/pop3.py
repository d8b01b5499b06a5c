"""POP3 behind a small, typed interface: open, list by UIDL, retrieve in pieces, delete.

poplib drives the session. Messages are known by their UIDL (RFC 1939), the only identity a
POP3 message has across sessions; a server without UIDL is refused rather than risking
duplicates. Deletions (DELE) take effect only at QUIT: a session that breaks deletes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import poplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from mailintake_shared.domain import Encryption
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.deadline import track
from mailintake_shared.mailbox.errors import (
    PollError,
    StartTlsUnavailableError,
    classify,
    injection_refused,
    server_words,
)
from mailintake_shared.mailbox.hints import opening_failed
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.session import Session

# Longest status or listing line accepted (poplib's own limit, 2048, is too short for some
# servers' greetings). A message's lines are read in pieces instead and may be any length.
_MAX_LINE = 1024 * 1024
_PIECE = 64 * 1024
# A server id holds 512 characters: a UIDL, a space and 16 hex digits at most.
_MAX_UIDL = 512 - 17


@dataclass(frozen=True)
class Pop3Message:
    number: int  # the message number in this session
    uidl: str
    size: int


class _POP3(poplib.POP3):
    """poplib with a line limit that real mail fits in, connected through the outbound guard
    (``network.py``)."""

    def __init__(self, host: str, port: int, timeout: float, network: NetworkPolicy) -> None:
        self._network = network  # before super().__init__, which connects
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return self._network.connect(self.host, self.port, timeout)

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def _putcmd(self, line: str) -> None:
        """poplib sends a command line as it is: one holding CR, LF or NUL would carry a
        second command (a ``DELE`` in a password). Refused before anything is sent."""
        if any(c in line for c in "\r\n\0"):
            raise injection_refused(line.split(" ", 1)[0].upper())
        super()._putcmd(line)  # type: ignore[misc]

    def begin(self, command: str) -> None:
        """Send a command and read its status line, raising ``error_proto`` on ``-ERR``; a
        multi-line answer the caller then reads with ``_getline`` or from ``file``."""
        self._putcmd(command)
        status, _ = self._getline()
        if not status.startswith(b"+"):
            raise poplib.error_proto(status)


class _POP3SSL(_POP3):
    """POP3 over implicit TLS (poplib.POP3_SSL's socket, through the guard)."""

    def __init__(
        self, host: str, port: int, timeout: float, network: NetworkPolicy, context: SSLContext
    ) -> None:
        self.context = context
        super().__init__(host, port, timeout, network)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = super()._create_socket(timeout)
        return track(self.context.wrap_socket(sock, server_hostname=self.host))

    def stls(self, context: Any = None) -> bytes:
        raise poplib.error_proto("-ERR TLS session already established")


class Pop3RetrieveError(PollError):
    """``RETR`` answered ``-ERR``: this message could not be read; the session goes on."""

    def __init__(self, words: str) -> None:
        super().__init__(ErrorKind.SERVER_ERROR, f"the server refused RETR: {words}")


def login_refused(exc: poplib.error_proto) -> PollError:
    """A ``-ERR`` to USER/PASS: a refused login, unless its response code says the mailbox is
    busy or the server is in trouble for now (RFC 2449 ``[IN-USE]``, RFC 3206 ``[SYS/TEMP]``),
    which is not the password's fault."""
    error = classify(exc)
    if error.kind is ErrorKind.THROTTLED:
        return error
    return PollError(
        ErrorKind.AUTHENTICATION, f"the server refused the login: {server_words(str(exc))}"
    )


class Pop3UidlUnsupportedError(PollError):
    def __init__(self) -> None:
        super().__init__(
            ErrorKind.UIDL_UNSUPPORTED,
            "the server does not support UIDL: without it, messages cannot be told apart "
            "between sessions and would be downloaded again",
        )


class Pop3Mailbox(Session):
    """One authenticated POP3 session (the mailbox is locked by the server until QUIT)."""

    def __init__(self, client: _POP3) -> None:
        self._client = client
        self.greeting = client.getwelcome().decode("utf-8", "replace")
        self.capabilities: tuple[str, ...] = ()

    @classmethod
    def open(cls, config: MailboxConfig) -> Pop3Mailbox:
        view = config.view
        host, port, timeout = config.address
        client: _POP3 | None = None
        try:
            context = config.tls_context()
            if view.encryption is Encryption.SSL:
                assert context is not None
                client = _POP3SSL(host, port, timeout, config.network, context)
            else:
                client = _POP3(host, port, timeout, config.network)
            mailbox = cls(client)
            capabilities = _capabilities(client)
            if view.encryption is Encryption.STARTTLS:
                if "STLS" not in capabilities:
                    raise StartTlsUnavailableError()
                client.stls(context)
                track(client.sock)
                capabilities = _capabilities(client)
            mailbox.capabilities = tuple(sorted(capabilities))
            if "UTF8" in capabilities:
                # RFC 6856: without it some servers (Courier) rewrite 8-bit mail into a wrapper
                # of their own; with it, RETR gives the message as stored.
                with contextlib.suppress(poplib.error_proto):
                    client.begin("UTF8")
            try:
                if "PLAIN" in (m.upper() for m in capabilities.get("SASL", [])):
                    # RFC 5034 with an initial response (RFC 4616): UTF-8, one round trip.
                    plain = f"\0{view.username}\0{config.secret}".encode()
                    client.begin("AUTH PLAIN " + base64.b64encode(plain).decode("ascii"))
                else:
                    client.user(view.username)
                    client.pass_(config.secret)
            except poplib.error_proto as exc:
                raise login_refused(exc) from exc
            return mailbox
        except Exception as exc:
            if client is not None:
                _close_quietly(client)
            raise opening_failed(exc, config) from exc

    def messages(self) -> list[Pop3Message]:
        """Every message on the server with its UIDL and size (``UIDL`` and ``LIST``)."""
        try:
            try:
                _, uidl_lines, _ = self._client.uidl()
            except poplib.error_proto as exc:
                raise Pop3UidlUnsupportedError() from exc
            _, list_lines, _ = self._client.list()
        except Exception as exc:
            raise classify(exc) from exc
        sizes = dict(_pairs(list_lines))
        return [
            Pop3Message(number=int(number), uidl=_held(uidl), size=int(sizes.get(number, "0")))
            for number, uidl in _pairs(uidl_lines)
        ]

    def count(self) -> int:
        try:
            return int(self._client.stat()[0])
        except Exception as exc:
            raise classify(exc) from exc

    def retrieve(self, number: int, piece_size: int) -> Iterator[bytes]:
        """The message's bytes as the server sends them, dot-unstuffed (RFC 1939 §3), in
        pieces of about ``piece_size``: a large message is never whole in memory, and a line
        of any length is read in pieces too (mail with a megabyte-long data: URI).

        Raises ``Pop3RetrieveError`` when the server answers ``-ERR`` (the session goes on),
        ``PollError`` for anything else.
        """
        try:
            try:
                self._client.begin(f"RETR {number}")
            except poplib.error_proto as exc:
                raise Pop3RetrieveError(server_words(str(exc))) from exc
            file = self._client.file
            pieces: list[bytes] = []
            held = 0
            at_line_start = True
            while True:
                piece = file.readline(_PIECE)
                if not piece:
                    raise poplib.error_proto("the server closed the connection inside RETR")
                if at_line_start:
                    if piece in (b".\r\n", b".\n"):
                        break
                    if piece[:2] == b"..":
                        piece = piece[1:]
                at_line_start = piece[-1:] == b"\n"
                pieces.append(piece)
                held += len(piece)
                if held >= piece_size:
                    data = b"".join(pieces)
                    pieces, held = [], 0
                    yield from _split(data, piece_size)
            if pieces:
                yield from _split(b"".join(pieces), piece_size)
        except PollError:
            raise
        except Exception as exc:
            raise classify(exc) from exc

    def delete(self, numbers: list[int]) -> None:
        """Mark messages for deletion; the server removes them at ``commit()``."""
        try:
            for number in numbers:
                self._client.dele(number)
        except Exception as exc:
            raise classify(exc) from exc

    def commit(self) -> None:
        """QUIT: the server applies the deletions and releases the mailbox."""
        try:
            self._client.quit()
        except Exception as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        """End the session without QUIT if it was not committed: deletions are dropped."""
        with contextlib.suppress(OSError, EOFError):
            self._client.close()


def _capabilities(client: poplib.POP3) -> dict[str, list[str]]:
    try:
        return client.capa()
    except poplib.error_proto:  # CAPA is optional (RFC 2449)
        return {}


def _pairs(lines: list[bytes]) -> Iterator[tuple[str, str]]:
    for line in lines:
        parts = line.decode("ascii", "replace").split()
        if len(parts) >= 2:
            yield parts[0], parts[1]


def _held(uidl: str) -> str:
    """The UIDL as the database holds it. RFC 1939 §7 allows 1 to 70 characters of 0x21-0x7E;
    longer ones, and control characters, are kept as the server sends them. A NUL, or more
    characters than a server id holds beside a content key (``selection.content_key``), could
    never be stored: such a UIDL is known by its SHA-256 instead, the same in every session."""
    if "\x00" not in uidl and len(uidl) <= _MAX_UIDL:
        return uidl
    return "sha256:" + hashlib.sha256(uidl.encode()).hexdigest()


def _split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _close_quietly(client: poplib.POP3) -> None:
    with contextlib.suppress(OSError, EOFError, poplib.error_proto):
        client.close()
