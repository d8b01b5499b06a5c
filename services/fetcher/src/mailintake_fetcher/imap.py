"""IMAP behind a small, typed interface: open, select, list new UIDs, fetch, apply actions.

imapclient drives the session (login, STARTTLS, SELECT, SEARCH, STORE, EXPUNGE). Library
exceptions leave this module as ``PollError`` through ``errors.classify``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailintake_fetcher.config import MailboxConfig
from mailintake_fetcher.errors import FolderMissingError, StartTlsUnavailableError, classify
from mailintake_shared.domain import Encryption
from mailintake_shared.tls import client_context

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
# UIDs per STORE/EXPUNGE command: keeps command lines short on every server.
_UIDS_PER_COMMAND = 500


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    exists: int


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    size: int
    internal_date: datetime | None
    seen: bool


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ImapMailbox:
    """One authenticated IMAP session on one connection's server."""

    def __init__(self, client: IMAPClient) -> None:
        self._client = client
        self._capabilities: tuple[bytes, ...] = ()

    @classmethod
    def open(cls, config: MailboxConfig) -> ImapMailbox:
        view = config.view
        host, port = view.host or "", view.port or 0
        timeout = view.timeout_ms / 1000
        client: IMAPClient | None = None
        try:
            context = client_context(verify=view.tls_verify, ca_pem=view.tls_ca_pem, server=host)
            implicit_tls = view.encryption is Encryption.SSL
            client = IMAPClient(
                host,
                port,
                ssl=implicit_tls,
                ssl_context=context if implicit_tls else None,
                timeout=timeout,
            )
            client.normalise_times = False  # keep INTERNALDATE's zone
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

    def select(self, folder: str) -> FolderInfo:
        try:
            if not self._client.folder_exists(folder):
                raise FolderMissingError(folder)
            status = self._client.select_folder(folder)
        except Exception as exc:
            raise classify(exc) from exc
        return FolderInfo(uidvalidity=int(status[b"UIDVALIDITY"]), exists=int(status[b"EXISTS"]))

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above ``last_uid``, ascending (``UID SEARCH UID n+1:*``).

        Per RFC 3501 ``n+1:*`` also matches the highest UID when it is below n+1; drop it.
        """
        try:
            found = self._client.search(["UID", f"{last_uid + 1}:*"])
        except Exception as exc:
            raise classify(exc) from exc
        return sorted(uid for uid in found if uid > last_uid)

    def metadata(self, uids: Sequence[int]) -> list[MessageMeta]:
        if not uids:
            return []
        try:
            response = self._client.fetch(list(uids), ["RFC822.SIZE", "INTERNALDATE", "FLAGS"])
        except Exception as exc:
            raise classify(exc) from exc
        return [
            MessageMeta(
                uid=uid,
                size=int(data.get(b"RFC822.SIZE", 0)),
                internal_date=data.get(b"INTERNALDATE"),
                seen=SEEN in data.get(b"FLAGS", ()),
            )
            for uid, data in sorted(response.items())
        ]

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        """Whole messages, without setting \\Seen (``BODY.PEEK[]``)."""
        try:
            response = self._client.fetch(list(uids), ["BODY.PEEK[]"])
        except Exception as exc:
            raise classify(exc) from exc
        return {uid: bytes(data.get(b"BODY[]") or b"") for uid, data in response.items()}

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

    def __enter__(self) -> ImapMailbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError, EOFError):
        with contextlib.suppress(IMAPClientError, OSError, EOFError):
            client.shutdown()
