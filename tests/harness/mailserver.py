"""What every real mail server of the tests offers, so that a contract test is written once.

A server (Dovecot, Cyrus, Courier, GNU Mailutils) has IMAP, IMAPS, POP3 and POP3S listeners
on 127.0.0.1 (STARTTLS on the plain ones) with a certificate from the tests' CA, adds users,
and puts messages into a user's folder. What it then holds is read back over IMAP by
:func:`served`: servers may rewrite what they were given (Cyrus replaces 8-bit header bytes
at APPEND), so a byte-exact test compares with what the server serves, not with what the
test appended.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from imapclient import IMAPClient

from tests.harness.tls import TestPki


@dataclass(frozen=True)
class Ports:
    imap: int
    imaps: int
    pop3: int
    pop3s: int


class MailServer(Protocol):
    name: str  # "dovecot", "cyrus", ...
    pki: TestPki
    ports: Ports

    def add_user(self, email: str | None = None, password: str = "secret") -> tuple[str, str]:
        """A new user with an empty INBOX; (login name, password)."""
        ...

    def seed(
        self,
        email: str,
        messages: Iterable[bytes],
        *,
        folder: str = "INBOX",
        seen: bool = False,
        received: datetime | None = None,
    ) -> int:
        """Put ``messages`` into the user's folder (made if missing), \\Seen or not, with
        ``received`` as their INTERNALDATE; how many."""
        ...


@dataclass(frozen=True)
class ServerMailbox:
    """A user on one of the servers."""

    server: MailServer
    username: str
    password: str


@dataclass(frozen=True)
class Served:
    """One message as the server serves it over IMAP (``BODY.PEEK[]``)."""

    raw: bytes
    flags: frozenset[bytes]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def imap_session(mailbox: ServerMailbox) -> IMAPClient:
    """A logged-in IMAPS session as the mailbox's user."""
    server = mailbox.server
    context = ssl.create_default_context(cafile=str(server.pki.ca_pem))
    client = IMAPClient("127.0.0.1", server.ports.imaps, ssl=True, ssl_context=context)
    client.login(mailbox.username, mailbox.password)
    return client


def served(mailbox: ServerMailbox, folder: str = "INBOX") -> dict[int, Served]:
    """Every message in the folder by UID, with its bytes and flags, read without changing
    any flag (EXAMINE, BODY.PEEK)."""
    with imap_session(mailbox) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        if not uids:
            return {}
        answer = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS"])
    return {
        uid: Served(bytes(items[b"BODY[]"]), frozenset(items[b"FLAGS"]))
        for uid, items in answer.items()
    }


def append(
    client: IMAPClient,
    folder: str,
    messages: Iterable[bytes],
    *,
    seen: bool = False,
    received: datetime | None = None,
) -> int:
    """APPEND ``messages`` to ``folder`` (made if missing) in one logged-in session: in
    MULTIAPPEND batches (RFC 3502) where the server offers it, else one by one; how many."""
    if folder.upper() != "INBOX" and not client.folder_exists(folder):
        client.create_folder(folder)
    flags = [rb"\Seen"] if seen else []
    items: list[dict[str, Any]] = [
        {"msg": m, "flags": flags, **({"date": received} if received else {})} for m in messages
    ]
    if b"MULTIAPPEND" in client.capabilities():
        for start in range(0, len(items), 500):
            client.multiappend(folder, items[start : start + 500])
    else:  # without Nagle's delay: one command line, then its literal, per message
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for item in items:
            client.append(folder, item["msg"], flags, item.get("date"))
    return len(items)
