"""IMAP behind a small, typed interface: open, select, list new UIDs, fetch, apply actions.

imapclient drives the session (login, STARTTLS, SELECT, SEARCH, STORE, EXPUNGE). Library
exceptions leave this module as ``PollError`` through ``errors.classify``.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from ssl import SSLContext
from typing import NamedTuple

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from mailintake_shared.domain import Encryption
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import FolderMissingError, StartTlsUnavailableError, classify
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.session import Session

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
# UIDs per STORE/EXPUNGE command: keeps command lines short on every server.
_UIDS_PER_COMMAND = 500


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    exists: int
    uidnext: int | None = None


class MessageMeta(NamedTuple):  # one per message on the bulk path: a tuple is cheapest
    uid: int
    size: int
    internal_date: datetime | None
    seen: bool


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _GuardedIMAPClient(IMAPClient):  # type: ignore[misc]
    """IMAPClient whose socket goes through the outbound guard (``network.py``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: bool,
        ssl_context: SSLContext | None,
        timeout: float,
        network: NetworkPolicy,
    ) -> None:
        self._network = network  # before super().__init__, which connects
        super().__init__(host, port, ssl=ssl, ssl_context=ssl_context, timeout=timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 (imapclient's name)
        timeout = self._timeout.connect
        if self.ssl:
            return _GuardedIMAP4TLS(self.host, self.port, self.ssl_context, timeout, self._network)
        return _GuardedIMAP4(self.host, self.port, timeout, self._network)


class _GuardedIMAP4(IMAP4WithTimeout):  # type: ignore[misc]
    def __init__(self, host: str, port: int, timeout: float | None, network: NetworkPolicy) -> None:
        self._network = network
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._network.connect(self.host, self.port, timeout or self._timeout)


class _GuardedIMAP4TLS(IMAP4_TLS):  # type: ignore[misc]
    def __init__(
        self,
        host: str,
        port: int,
        context: SSLContext | None,
        timeout: float | None,
        network: NetworkPolicy,
    ) -> None:
        self._network = network
        super().__init__(host, port, context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = self._network.connect(self.host, self.port, timeout or self._timeout)
        context: SSLContext = self.ssl_context  # always given for implicit TLS
        return context.wrap_socket(sock, server_hostname=self.host)


class ImapMailbox(Session):
    """One authenticated IMAP session on one connection's server."""

    def __init__(self, client: IMAPClient) -> None:
        self._client = client
        self._capabilities: tuple[bytes, ...] = ()

    @classmethod
    def open(cls, config: MailboxConfig) -> ImapMailbox:
        view = config.view
        host, port, timeout = config.address
        client: IMAPClient | None = None
        try:
            context = config.tls_context()
            implicit_tls = view.encryption is Encryption.SSL
            client = _GuardedIMAPClient(
                host,
                port,
                ssl=implicit_tls,
                ssl_context=context if implicit_tls else None,
                timeout=timeout,
                network=config.network,
            )
            client.normalise_times = False  # keep INTERNALDATE's zone
            # imapclient turns imaplib's protocol trace on (debug 5) and drops it in a logger;
            # formatting that trace costs more than the transfer itself. Off.
            client._imap.debug = 0
            if view.encryption is Encryption.STARTTLS:
                if not client.has_capability("STARTTLS"):
                    raise StartTlsUnavailableError()
                client.starttls(ssl_context=context)
            config.login(client)
            mailbox = cls(client)
            mailbox._capabilities = tuple(client.capabilities())
            return mailbox
        except Exception as exc:
            if client is not None:
                _close_quietly(client)
            raise classify(exc) from exc

    @property
    def capabilities(self) -> tuple[bytes, ...]:
        return self._capabilities

    @property
    def greeting(self) -> str:
        return bytes(self._client.welcome or b"").decode("utf-8", "replace")

    def select(self, folder: str) -> FolderInfo:
        try:
            if not self._client.folder_exists(folder):
                raise FolderMissingError(folder)
            status = self._client.select_folder(folder)
        except Exception as exc:
            raise classify(exc) from exc
        uidnext = status.get(b"UIDNEXT")
        return FolderInfo(
            uidvalidity=int(status[b"UIDVALIDITY"]),
            exists=int(status[b"EXISTS"]),
            uidnext=int(uidnext) if uidnext is not None else None,
        )

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above ``last_uid``, ascending (``UID SEARCH UID n+1:*``).

        Per RFC 3501 ``n+1:*`` also matches the highest UID when it is below n+1; drop it.
        """
        found = self._uid_search("UID", f"{last_uid + 1}:*")
        return sorted(uid for uid in found if uid > last_uid)

    def uids_between(self, first: int, last: int, criteria: Sequence[str]) -> list[int]:
        """UIDs from ``first`` to ``last`` that also match ``criteria`` (``UNSEEN``, …)."""
        if last < first:
            return []
        found = self._uid_search("UID", f"{first}:{last}", *criteria)
        return sorted(uid for uid in found if first <= uid <= last)

    def highest_uid(self) -> int:
        """The highest UID in the selected folder (0 when it is empty)."""
        return max(self._uid_search("UID", "*"), default=0)

    def metadata(self, uids: Sequence[int]) -> list[MessageMeta]:
        """Size, arrival time and \\Seen of each UID (one ``UID FETCH``, parsed directly)."""
        if not uids:
            return []
        data = self._uid_command(
            "FETCH", sequence_set(uids), "(UID RFC822.SIZE INTERNALDATE FLAGS)"
        )
        metas = [_parse_meta(line) for line in data if isinstance(line, bytes) and line]
        return sorted((m for m in metas if m is not None), key=lambda m: m.uid)

    def larger_than(self, uids: Sequence[int], size: int) -> set[int]:
        """Which of ``uids`` are over ``size`` bytes: one ``UID SEARCH … LARGER`` over their
        span, a short answer where a size per message would take one line each."""
        if not uids:
            return set()
        found = self._uid_search("UID", f"{min(uids)}:{max(uids)}", "LARGER", str(size))
        return set(found) & set(uids)

    def _uid_search(self, *criteria: str) -> list[int]:
        """``UID SEARCH`` of atoms, its one-line answer read directly (imapclient's general
        parser costs milliseconds for the 5,000 UIDs of a first poll)."""
        data = self._uid_command("SEARCH", *criteria)
        lines = [line for line in data if isinstance(line, bytes)]
        return [int(word) for line in lines for word in line.split() if word.isdigit()]

    def _uid_command(self, command: str, *args: str) -> list[bytes | tuple[bytes, bytes]]:
        """A ``UID`` command through the session's imaplib object, whose raw answer the
        callers read themselves; a failure leaves as ``PollError``."""
        try:
            status, data = self._client._imap.uid(command, *args)
        except Exception as exc:
            raise classify(exc) from exc
        if status != "OK":
            raise classify(IMAPClientError(f"UID {command} failed: {data!r}"))
        return list(data)

    def messages(self, uids: Sequence[int]) -> Iterator[tuple[MessageMeta, bytes]]:
        """Whole messages with their metadata, without setting \\Seen, each yielded as it
        arrives (``UID FETCH … (UID RFC822.SIZE INTERNALDATE FLAGS BODY.PEEK[])``).

        The bulk path reads the response itself, line by line from the session's socket:
        imaplib's and imapclient's general response handling cost more than the transfer,
        and this response has one simple shape (``* n FETCH (… BODY[] {size}`` + literal +
        ``)``). Memory holds one message at a time. A UID the server does not answer for was
        expunged meanwhile (RFC 3501) and is not yielded. Consume the iterator to the end:
        the session is in step again only after the tagged reply.
        """
        if not uids:
            return
        imap = self._client._imap
        try:
            tag = imap._command("UID", "FETCH", sequence_set(uids), _BULK_ITEMS)
            try:
                yield from read_fetch_response(imap.readline, imap.read, tag, set(uids))
            finally:
                imap.tagged_commands.pop(tag, None)
        except Exception as exc:
            raise classify(exc) from exc

    def body_range(self, uid: int, offset: int, length: int) -> bytes:
        """``length`` bytes of a message from ``offset`` (``BODY.PEEK[]<offset.length>``)."""
        try:
            response = self._client.fetch([uid], [f"BODY.PEEK[]<{offset}.{length}>"])
        except Exception as exc:
            raise classify(exc) from exc
        data = response.get(uid, {})
        return bytes(data.get(f"BODY[]<{offset}>".encode()) or b"")

    def mark_seen(self, uids: Sequence[int]) -> None:
        try:
            for part in _chunks(uids, _UIDS_PER_COMMAND):
                self._client.add_flags(list(part), [SEEN], silent=True)
        except Exception as exc:
            raise classify(exc) from exc

    def delete(self, uids: Sequence[int]) -> None:
        """Flag ``uids`` \\Deleted and expunge exactly them.

        With UIDPLUS, ``UID EXPUNGE`` removes only these. Without it, a plain EXPUNGE would
        also remove other \\Deleted messages, possibly ones not yet stored: it runs only when
        every flagged message is one of ``uids``; otherwise they stay flagged for a later poll.
        """
        try:
            for part in _chunks(uids, _UIDS_PER_COMMAND):
                self._client.add_flags(list(part), [DELETED], silent=True)
            if b"UIDPLUS" in self._capabilities:
                for part in _chunks(uids, _UIDS_PER_COMMAND):
                    self._client.uid_expunge(list(part))
            elif set(self._client.search(["DELETED"])) <= set(uids):
                self._client.expunge()
        except Exception as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        _close_quietly(self._client)


_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_DATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def sequence_set(uids: Sequence[int]) -> str:
    """Sorted UIDs as a compact IMAP sequence set: ``1:500,502,510:512``."""
    parts: list[str] = []
    ordered = sorted(uids)
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid == previous + 1:
            previous = uid
            continue
        parts.append(f"{start}:{previous}" if previous > start else str(start))
        start = previous = uid
    parts.append(f"{start}:{previous}" if previous > start else str(start))
    return ",".join(parts)


_MONTHS = {
    m: i
    for i, m in enumerate(
        (
            b"Jan",
            b"Feb",
            b"Mar",
            b"Apr",
            b"May",
            b"Jun",
            b"Jul",
            b"Aug",
            b"Sep",
            b"Oct",
            b"Nov",
            b"Dec",
        ),
        start=1,
    )
}


def parse_internaldate(text: bytes) -> datetime | None:
    """``24-Nov-2026 07:16:00 +0000`` (RFC 3501 date-time) → an aware datetime.

    Hand-written because ``strptime`` costs more than receiving the message does.
    """
    try:
        day, month, rest = text.strip().split(b"-", 2)
        year, clock, zone = rest.split(b" ")
        hour, minute, second = clock.split(b":")
        return datetime(
            int(year),
            _MONTHS[month],
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


# What Dovecot and most servers answer, in the order asked: one match instead of four.
_META_IN_ORDER = re.compile(
    rb'UID (\d+) RFC822\.SIZE (\d+) INTERNALDATE "([^"]+)" FLAGS \(([^)]*)\)'
)


def _parse_meta(line: bytes) -> MessageMeta | None:
    ordered = _META_IN_ORDER.search(line)
    if ordered is not None:
        uid_text, size_text, date_text, flags_text = ordered.groups()
        return MessageMeta(
            uid=int(uid_text),
            size=int(size_text),
            internal_date=parse_internaldate(date_text),
            seen=SEEN in flags_text.split(),
        )
    uid = _UID.search(line)
    if uid is None:
        return None
    size, date, flags = _SIZE.search(line), _DATE.search(line), _FLAGS.search(line)
    return MessageMeta(
        uid=int(uid.group(1)),
        size=int(size.group(1)) if size else 0,
        internal_date=parse_internaldate(date.group(1)) if date else None,
        seen=bool(flags) and SEEN in flags.group(1).split(),  # type: ignore[union-attr]
    )


_BULK_ITEMS = "(UID RFC822.SIZE INTERNALDATE FLAGS BODY.PEEK[])"
_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n\Z")
_EMPTY_BODY = re.compile(rb'BODY\[\] (?:NIL|"")')
_FETCH_NUMBER = re.compile(rb"\* (\d+) FETCH ")


def read_fetch_response(
    readline: Callable[[], bytes], read: Callable[[int], bytes], tag: bytes, wanted: set[int]
) -> Iterator[tuple[MessageMeta, bytes]]:
    """The messages of one bulk ``UID FETCH`` response, up to its tagged reply.

    Other untagged responses (``EXISTS``, ``EXPUNGE``) are passed over. The metadata items
    may come before or after the literal, in any order, or in an earlier FETCH response of
    the same message (servers may split one message's items over several).
    """
    earlier: dict[bytes, bytes] = {}  # FETCH responses without a body, by sequence number
    while True:
        line = readline()
        if not line:
            raise imaplib.IMAP4.abort("the server closed the connection during FETCH")
        if line.startswith(tag + b" "):
            if line[len(tag) + 1 :].startswith(b"OK"):
                return
            raise IMAPClientError(f"UID FETCH failed: {line.strip()!r}")
        if line.startswith(b"* BYE"):
            raise imaplib.IMAP4.abort(line.decode("utf-8", "replace").strip())
        number = _FETCH_NUMBER.match(line)
        literal = _LITERAL_AT_END.search(line)
        if literal is None:
            if _EMPTY_BODY.search(line):  # an empty message, sent as NIL or ""
                meta = _parse_meta(line)
                if meta is not None and meta.uid in wanted:
                    yield meta, b""
            elif number is not None:
                earlier[number.group(1)] = line
            continue
        size = int(literal.group(1))
        body = read(size)
        if len(body) < size:
            raise imaplib.IMAP4.abort("the server closed the connection inside a message")
        rest = readline()
        if _LITERAL_AT_END.search(rest):
            raise IMAPClientError("FETCH response with more than one literal")
        # The message's own items first: the searches take the first match.
        meta = _parse_meta(line + rest + (earlier.pop(number.group(1), b"") if number else b""))
        if meta is None:
            raise IMAPClientError("FETCH response without UID")
        if meta.uid in wanted:
            yield meta, body


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError, EOFError):
        with contextlib.suppress(IMAPClientError, OSError, EOFError):
            client.shutdown()
