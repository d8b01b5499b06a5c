"""POP3 behind a small, typed interface: open, list by UIDL, retrieve in pieces, delete.

poplib drives the session. Messages are known by their UIDL (RFC 1939), the only identity a
POP3 message has across sessions; a server without UIDL is refused rather than risking
duplicates. Deletions (DELE) take effect only at QUIT: a session that breaks deletes nothing.
"""

from __future__ import annotations

import contextlib
import poplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from mailintake_shared.domain import Encryption
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import PollError, StartTlsUnavailableError, classify
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.session import Session

# Longest line accepted. poplib's own limit (2048) rejects real mail with long lines;
# RFC 5322 allows 998, hostile mail has more.
_MAX_LINE = 1024 * 1024


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

    def begin(self, command: str) -> None:
        """Send a command whose multi-line answer the caller reads with ``_getline``."""
        self.sock.sendall(command.encode("ascii") + poplib.CRLF)
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
        return self.context.wrap_socket(sock, server_hostname=self.host)

    def stls(self, context: Any = None) -> bytes:
        raise poplib.error_proto("-ERR TLS session already established")


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
                capabilities = _capabilities(client)
            mailbox.capabilities = tuple(sorted(capabilities))
            try:
                client.user(view.username)
                client.pass_(config.secret)
            except poplib.error_proto as exc:
                raise PollError(
                    ErrorKind.AUTHENTICATION, f"the server refused the login: {exc}"
                ) from exc
            return mailbox
        except Exception as exc:
            if client is not None:
                _close_quietly(client)
            raise classify(exc) from exc

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
            Pop3Message(number=int(number), uidl=uidl, size=int(sizes.get(number, "0")))
            for number, uidl in _pairs(uidl_lines)
        ]

    def count(self) -> int:
        try:
            return int(self._client.stat()[0])
        except Exception as exc:
            raise classify(exc) from exc

    def retrieve(self, number: int, piece_size: int) -> Iterator[bytes]:
        """The message's bytes as the server sends them (CRLF lines, dot-unstuffed), in
        pieces of about ``piece_size``: a large message is never whole in memory."""
        try:
            self._client.begin(f"RETR {number}")
            piece: list[bytes] = []
            held = 0
            while True:
                line, _ = self._client._getline()
                if line == b".":
                    break
                if line.startswith(b".."):
                    line = line[1:]
                piece.append(line + b"\r\n")
                held += len(line) + 2
                if held >= piece_size:
                    data = b"".join(piece)
                    piece, held = [], 0
                    yield from _split(data, piece_size)
            if piece:
                yield from _split(b"".join(piece), piece_size)
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


def _split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _close_quietly(client: poplib.POP3) -> None:
    with contextlib.suppress(OSError, EOFError, poplib.error_proto):
        client.close()
