"""IMAP behind a small, typed interface: open, select, list new UIDs, fetch, apply actions.

imapclient drives the session (login, STARTTLS, SELECT, SEARCH, STORE, EXPUNGE); every
``UID FETCH`` is read by the project's own reader (``imap_wire``), which follows RFC 3501's
grammar and reports, per UID, what the server delivered and what it did not. Library
exceptions leave this module as ``PollError`` through ``errors.classify``.

No server is trusted to answer exactly what was asked (DESIGN.md, promise 9): a listing that
``UID SEARCH`` leaves empty while ``UIDNEXT`` says there is new mail is made again with
``UID FETCH``; a UID the server does not deliver is checked for (``present``) rather than
taken for expunged.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from ssl import SSLContext

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from mailintake_shared.domain import Encryption
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.deadline import track
from mailintake_shared.mailbox.errors import (
    FolderMissingError,
    PollError,
    StartTlsUnavailableError,
    classify,
    injection_refused,
)
from mailintake_shared.mailbox.hints import opening_failed
from mailintake_shared.mailbox.imap_wire import (
    SEEN,
    Fetched,
    FetchReader,
    FetchReport,
    MessageMeta,
    ServerClosed,
)
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.session import Session

__all__ = ["DELETED", "SEEN", "BulkFetch", "FolderInfo", "ImapMailbox", "MessageMeta"]

DELETED = b"\\Deleted"
# RFC 3501 §9: a UID is a non-zero 32-bit number. A larger one, or 0, is no message's.
MAX_UID = 2**32 - 1
# UIDs per STORE/EXPUNGE/FETCH command: keeps command lines short on every server.
_UIDS_PER_COMMAND = 500
# Literals of a bulk FETCH are bounded: a message far over what the LARGER search said ends
# the session, and the next poll fetches it by byte range.
MIN_BULK_LITERAL = 8 * 1024 * 1024
# A literal in the answer to any other command than FETCH (a folder name, a server's text).
MAX_ANSWER_LITERAL = 1024 * 1024


_UNSENDABLE = re.compile(rb"[\r\n\x00]")


@dataclass(frozen=True)
class FolderInfo:
    """What ``SELECT``/``EXAMINE`` said (RFC 3501 §6.3.1); ``uidnext`` is None when the
    server did not send it."""

    uidvalidity: int
    exists: int
    uidnext: int | None = None


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


class _NoInjection:
    """imaplib writes a command's arguments as they are: one holding CR, LF or NUL would end
    the command and start another of the sender's choosing. RFC 3501 §9 allows none of them in
    an atom or a quoted string; such an argument is refused before anything is sent."""

    def _command(self, name: str, *args: object) -> object:
        for arg in args:
            text = arg.encode("utf-8", "replace") if isinstance(arg, str) else arg
            if isinstance(text, bytes) and _UNSENDABLE.search(text):
                raise injection_refused(name)
        return super()._command(name, *args)  # type: ignore[misc]


class _BareLineFeeds:
    """imaplib refuses a response line that ends with a bare LF ("unterminated line"). GNU
    Mailutils' imap4d ends its answer to AUTHENTICATE that way; the line is taken as it is,
    as the response reader of the bulk path (``imap_wire``) takes such lines too."""

    def _get_line(self) -> bytes:
        line: bytes = self.readline()  # type: ignore[attr-defined]
        if not line:
            raise imaplib.IMAP4.abort("socket error: EOF")
        if line.endswith(b"\r\n"):
            return line[:-2]
        if line.endswith(b"\n"):
            return line[:-1]
        raise imaplib.IMAP4.abort(f"socket error: unterminated line: {line[:200]!r}")


class _BoundedLiterals:
    """imaplib reads a literal of whatever size the server announces into memory, in the
    answer to any command. FETCH answers are read by ``imap_wire``, which bounds each literal
    itself (``read_literal``); no other answer has a reason to carry more than
    ``MAX_ANSWER_LITERAL`` bytes in one literal: a larger one (gigabytes announced, or sent
    without end) ends the session before it is read."""

    def read(self, size: int) -> bytes:
        if size > MAX_ANSWER_LITERAL:
            raise imaplib.IMAP4.abort(
                f"the server announced a literal of {size} bytes where a few are expected "
                f"(at most {MAX_ANSWER_LITERAL}); it is not read"
            )
        return self.read_literal(size)

    def read_literal(self, size: int) -> bytes:
        """``size`` bytes, without the bound (for a reader that bounds them itself)."""
        data: bytes = super().read(size)  # type: ignore[misc]
        return data


class _GuardedIMAP4(_NoInjection, _BareLineFeeds, _BoundedLiterals, IMAP4WithTimeout):  # type: ignore[misc]
    def __init__(self, host: str, port: int, timeout: float | None, network: NetworkPolicy) -> None:
        self._network = network
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._network.connect(self.host, self.port, timeout or self._timeout)


class _GuardedIMAP4TLS(_NoInjection, _BareLineFeeds, _BoundedLiterals, IMAP4_TLS):  # type: ignore[misc]
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
        return track(context.wrap_socket(sock, server_hostname=self.host))


class ImapMailbox(Session):
    """One authenticated IMAP session on one connection's server."""

    def __init__(self, client: IMAPClient) -> None:
        self._client = client
        self._capabilities: tuple[bytes, ...] = ()
        self._info: FolderInfo | None = None
        # Set when this server's UID SEARCH was seen to leave out messages that are there:
        # its answers are not relied on for the rest of the session.
        self.search_unreliable = False

    @classmethod
    def open(cls, config: MailboxConfig) -> ImapMailbox:
        """Connect, STARTTLS when asked, and log in — unless the greeting is ``PREAUTH``
        (RFC 3501 §7.1.4: already authenticated), which is taken as it is, except when
        STARTTLS was asked for (impossible after PREAUTH: refused rather than plain text).

        Raises ``PollError`` with the step that failed.
        """
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
            preauth = client._imap.state == "AUTH"
            if view.encryption is Encryption.STARTTLS:
                if preauth:
                    raise PollError(
                        ErrorKind.STARTTLS_UNAVAILABLE,
                        "the server greeted with PREAUTH, after which STARTTLS is not possible; "
                        "refusing to continue in plain text",
                    )
                if not client.has_capability("STARTTLS"):
                    raise StartTlsUnavailableError()
                client.starttls(ssl_context=context)
                track(client._imap.sock)
            if not preauth:
                config.login(client)
            mailbox = cls(client)
            mailbox._capabilities = tuple(client.capabilities())
            return mailbox
        except Exception as exc:
            failure: BaseException = exc
            if client is not None:
                said = _farewell(client)
                if said is not None:  # the server ended it: not a refused login, nor a socket
                    failure = ServerClosed(said)
                _close_quietly(client)
            raise opening_failed(failure, config) from exc

    @property
    def capabilities(self) -> tuple[bytes, ...]:
        return self._capabilities

    @property
    def greeting(self) -> str:
        return bytes(self._client.welcome or b"").decode("utf-8", "replace")

    def select(self, folder: str, *, readonly: bool = False) -> FolderInfo:
        """``SELECT`` the folder (``EXAMINE`` when ``readonly``: nothing on the server can
        change). Raises ``FolderMissingError`` when it does not exist.

        Whether it exists (``LIST``) is asked only when the ``SELECT`` fails: a poll of a
        folder that is there costs one round trip to the server, not two."""
        try:
            try:
                status = self._client.select_folder(folder, readonly=readonly)
            except IMAPClientError as refused:
                if isinstance(refused, imaplib.IMAP4.abort):  # the session is gone
                    raise
                # A refused SELECT leaves the session authenticated (RFC 3501 §6.3.1).
                if not self._client.folder_exists(folder):
                    raise FolderMissingError(folder, self._folder_names()) from None
                raise
        except Exception as exc:
            raise classify(exc) from exc
        if b"UIDVALIDITY" not in status:
            raise PollError(
                ErrorKind.SERVER_ERROR,
                f"the server's SELECT of {folder!r} gave no UIDVALIDITY (RFC 3501 requires it)",
            )
        uidnext = status.get(b"UIDNEXT")
        self._info = FolderInfo(
            uidvalidity=int(status[b"UIDVALIDITY"]),
            exists=int(status.get(b"EXISTS", 0)),
            uidnext=int(uidnext) if uidnext is not None else None,
        )
        return self._info

    def _folder_names(self) -> list[str]:
        """The folders the account sees (``LIST "" *``), to say which exist; none if the
        server will not say."""
        try:
            return [str(name) for _, _, name in self._client.list_folders()]
        except Exception:
            return []

    # --- listing --------------------------------------------------------------------------
    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above ``last_uid``, ascending (``UID SEARCH UID n+1:*``).

        Per RFC 3501 ``n+1:*`` also matches the highest UID when it is below n+1: dropped.
        When the search finds nothing (or is refused) although the folder's ``UIDNEXT`` (or,
        without it, its message count) says there may be new mail, the listing is made again
        with ``UID FETCH n+1:* (UID)`` and, if that is empty too, from the tail of the
        sequence numbers: a server whose SEARCH leaves messages out (GNU Mailutils) is still
        read whole, and a server that behaves pays nothing more.
        """
        try:
            found = [u for u in self._uid_search("UID", f"{last_uid + 1}:*") if u > last_uid]
        except PollError as exc:
            if exc.kind is not ErrorKind.SERVER_ERROR:
                raise
            found = []
        if found or not self._may_hold_more(last_uid):
            return sorted(set(found))
        listed = [uid for uid in self._listing(f"{last_uid + 1}:*") if uid > last_uid]
        found = listed or self._tail_after(last_uid)
        if found:
            self.search_unreliable = True
        return sorted(set(found))

    def _may_hold_more(self, last_uid: int) -> bool:
        info = self._info
        if info is None or info.exists == 0:
            return False
        return info.uidnext is None or info.uidnext > last_uid + 1

    def _tail_after(self, last_uid: int) -> list[int]:
        """The UIDs above ``last_uid`` read from the end of the folder by sequence number, in
        windows that double until one reaches a UID at or below ``last_uid``."""
        found: list[int] = []
        window, end = 64, self._info.exists if self._info else 0
        while end > 0:
            start = max(1, end - window + 1)
            uids = self._listing(f"{start}:{end}", by_uid=False)
            found.extend(uid for uid in uids if uid > last_uid)
            if not uids or min(uids) <= last_uid:
                break
            end, window = start - 1, window * 2
        return found

    def uids_between(self, first: int, last: int, criteria: Sequence[str]) -> list[int]:
        """UIDs from ``first`` to ``last`` that also match ``criteria`` (``UNSEEN``, …)."""
        if last < first:
            return []
        found = self._uid_search("UID", f"{first}:{last}", *criteria)
        return sorted(uid for uid in found if first <= uid <= last)

    def highest_uid(self) -> int:
        """The highest UID in the selected folder (0 when it is empty): the UID of the last
        message by sequence number (``FETCH n (UID)``), which every server answers (GNU
        Mailutils refuses ``UID SEARCH UID *``)."""
        exists = self._info.exists if self._info else 0
        if exists == 0:
            return 0
        return max(self._listing(str(exists), by_uid=False), default=0)

    def larger_than(self, uids: Sequence[int], size: int) -> set[int]:
        """Which of ``uids`` are over ``size`` bytes: one ``UID SEARCH … LARGER`` over their
        span, a short answer where a size per message would take one line each. On a server
        whose SEARCH left messages out, their ``RFC822.SIZE`` instead."""
        if not uids:
            return set()
        if self.search_unreliable:
            return {meta.uid for meta in self.metadata(uids) if meta.size > size}
        found = self._uid_search("UID", f"{min(uids)}:{max(uids)}", "LARGER", str(size))
        return set(found) & set(uids)

    def _uid_search(self, *criteria: str) -> list[int]:
        """``UID SEARCH`` of atoms, its answer read directly (imapclient's general parser
        costs milliseconds for the 5,000 UIDs of a first poll)."""
        data = self._uid_command("SEARCH", *criteria)
        lines = [line for line in data if isinstance(line, bytes)]
        found = (int(word) for line in lines for word in line.split() if word.isdigit())
        return [uid for uid in found if 0 < uid <= MAX_UID]

    def _uid_command(self, command: str, *args: str) -> list[bytes | tuple[bytes, bytes]]:
        """A ``UID`` command through the session's imaplib object, whose raw answer the
        callers read themselves; a failure leaves as ``PollError``."""
        try:
            status, data = self._client._imap.uid(command, *args)
        except Exception as exc:
            raise classify(exc) from exc
        if status != "OK":
            raise classify(IMAPClientError(f"UID {command} failed: {server_text(data)}"))
        return list(data)

    # --- fetching -------------------------------------------------------------------------
    def fetch(self, uids: Collection[int], max_literal: int) -> BulkFetch:
        """Whole messages with their metadata, without setting \\Seen
        (``UID FETCH … (UID RFC822.SIZE INTERNALDATE FLAGS BODY.PEEK[])``), each handed on as
        it arrives; memory holds one message at a time. Iterate to the end: the session is
        in step again only after the tagged reply; ``report`` then says what was not
        delivered and why."""
        return BulkFetch(
            self,
            uids,
            "(UID RFC822.SIZE INTERNALDATE FLAGS BODY.PEEK[])",
            body_item=b"BODY[]",
            metadata=True,
            max_literal=max_literal,
        )

    def metadata(self, uids: Sequence[int]) -> list[MessageMeta]:
        """Size, arrival time and \\Seen of each of ``uids`` the server has, by UID."""
        metas: list[MessageMeta] = []
        for part in _chunks(sorted(uids), _UIDS_PER_COMMAND):
            command = BulkFetch(self, part, "(UID RFC822.SIZE INTERNALDATE FLAGS)", metadata=True)
            metas.extend(found.meta for found in command)
        return sorted(metas)

    def metadata_between(self, first: int, last: int) -> list[MessageMeta]:
        """The metadata of every message with a UID from ``first`` to ``last``
        (``UID FETCH first:last``), without relying on SEARCH."""
        items = "(UID RFC822.SIZE INTERNALDATE FLAGS)"
        command = BulkFetch(self, None, items, metadata=True, numbers=f"{first}:{last}")
        return sorted(item.meta for item in command if first <= item.meta.uid <= last)

    def present(self, uids: Collection[int]) -> set[int]:
        """Which of ``uids`` the folder still holds (``UID FETCH … (UID)``). Only a clean
        ``OK`` that leaves a UID out says it is gone: after a ``NO`` or ``BAD`` every UID
        not answered for counts as present (unknown is never taken for gone)."""
        found: set[int] = set()
        for part in _chunks(sorted(uids), _UIDS_PER_COMMAND):
            command = BulkFetch(self, part, "(UID)")
            found.update(item.meta.uid for item in command)
            if command.report.status != "OK":
                found.update(part)
        return found

    def _listing(self, numbers: str, *, by_uid: bool = True) -> list[int]:
        """The UIDs of a UID range (``UID FETCH n:m (UID)``) or of a sequence range."""
        command = BulkFetch(self, None, "(UID)", numbers=numbers, by_uid=by_uid)
        return [item.meta.uid for item in command if 0 < item.meta.uid <= MAX_UID]

    def body_range(self, uid: int, offset: int, length: int) -> tuple[bytes | None, str]:
        """``length`` bytes of a message from ``offset`` (``BODY.PEEK[]<offset.length>``):
        the bytes (fewer at the end of the message), or None and what the server answered
        instead."""
        command = BulkFetch(
            self,
            (uid,),
            f"(UID BODY.PEEK[]<{offset}.{length}>)",
            body_item=f"BODY[]<{offset}>".encode(),
            max_literal=max(2 * length, 64 * 1024 * 1024),
        )
        found = [item.body for item in command]
        if found and found[0] is not None:
            return found[0], ""
        report = command.report
        return None, with_server_words(
            report.problems.get(uid, "the server did not answer for it"), report
        )

    # --- actions --------------------------------------------------------------------------
    def mark_seen(self, uids: Sequence[int]) -> None:
        try:
            for part in _chunks(uids, _UIDS_PER_COMMAND):
                self._client.add_flags(list(part), [SEEN], silent=True)
        except Exception as exc:
            raise classify(exc) from exc

    def delete(self, uids: Sequence[int], may_expunge: Callable[[set[int]], bool]) -> bool:
        """Flag ``uids`` \\Deleted and expunge exactly them; True when they are gone.

        With UIDPLUS, ``UID EXPUNGE`` removes only these (RFC 4315). Without it, ``EXPUNGE``
        removes every \\Deleted message of the folder, possibly ones another client flagged
        that are not stored yet: it runs only when ``may_expunge`` says every other flagged
        UID is accounted for (stored, or left out by the folder's first-sync rule). Otherwise
        ``uids`` stay flagged and the answer is False; a later poll expunges them once the
        others are stored (they are new mail above the cursor, which that poll downloads).
        """
        try:
            for part in _chunks(uids, _UIDS_PER_COMMAND):
                self._client.add_flags(list(part), [DELETED], silent=True)
            if b"UIDPLUS" in self._capabilities:
                for part in _chunks(uids, _UIDS_PER_COMMAND):
                    self._client.uid_expunge(list(part))
                return True
            others = set(self._client.search(["DELETED"])) - set(uids)
            if others and not may_expunge(others):
                return False
            self._client.expunge()
            return True
        except Exception as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        _close_quietly(self._client)


class BulkFetch:
    """One ``UID FETCH`` (or sequence ``FETCH``) command, read by ``imap_wire.FetchReader``.

    Iterating yields ``imap_wire.Fetched`` items; ``report`` is complete after the last one.
    Errors leave as ``PollError`` (``errors.classify``).
    """

    def __init__(
        self,
        mailbox: ImapMailbox,
        uids: Collection[int] | None,
        items: str,
        *,
        body_item: bytes | None = None,
        metadata: bool = False,
        max_literal: int = MIN_BULK_LITERAL,
        numbers: str | None = None,
        by_uid: bool = True,
    ) -> None:
        self._imap = mailbox._client._imap
        self._wanted = set(uids) if uids is not None else None
        self._numbers = numbers if numbers is not None else sequence_set(sorted(uids or ()))
        self._items = items
        self._body_item = body_item
        self._metadata = metadata
        self._max_literal = max_literal
        self._by_uid = by_uid
        self.report = FetchReport()

    def __iter__(self) -> Iterator[Fetched]:
        imap = self._imap
        try:
            command = ("UID", "FETCH") if self._by_uid else ("FETCH",)
            tag = imap._command(*command, self._numbers, self._items)
            try:
                reader = FetchReader(
                    imap.readline,
                    imap.read_literal,
                    tag,
                    self._wanted,
                    body_item=self._body_item,
                    metadata=self._metadata,
                    max_literal=self._max_literal,
                    max_held=max(8 * self._max_literal, 64 * 1024 * 1024),
                )
                self.report = reader.report
                yield from reader
            finally:
                imap.tagged_commands.pop(tag, None)
        except Exception as exc:
            raise classify(exc) from exc


def with_server_words(text: str, report: FetchReport) -> str:
    """``text``, and what the server said about the command when it said anything."""
    said = report.server_said
    return f"{text}; the server said: {said}" if said else text


def server_text(data: object) -> str:
    """The server's words from an imaplib answer, as text (not a Python bytes literal)."""
    if isinstance(data, list | tuple):
        return " ".join(server_text(item) for item in data if item is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


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


def _farewell(client: IMAPClient) -> str | None:
    """The text of a ``* BYE`` the server sent while the session was opened. imaplib reports
    it as a refused LOGIN, or only as the closed connection after it (AUTHENTICATE)."""
    said = client._imap.untagged_responses.get("BYE")
    return server_text(said[-1]) if said else None


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError, EOFError):
        with contextlib.suppress(IMAPClientError, OSError, EOFError):
            client.shutdown()
