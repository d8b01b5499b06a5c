"""The connection vocabulary every service speaks: protocols, encryption, defaults."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class Protocol(StrEnum):
    IMAP = "imap"
    POP3 = "pop3"
    GOOGLE_OAUTH2 = "google_oauth2"
    MICROSOFT_OAUTH2 = "microsoft_oauth2"

    @property
    def is_oauth2(self) -> bool:
        return self in (Protocol.GOOGLE_OAUTH2, Protocol.MICROSOFT_OAUTH2)


class Transport(StrEnum):
    """How a connection talks to its server: IMAP (every protocol but POP3 may), POP3, Graph."""

    IMAP = "imap"
    POP3 = "pop3"
    GRAPH = "graph"


class Encryption(StrEnum):
    NONE = "none"
    SSL = "ssl"
    STARTTLS = "starttls"


class AfterDownload(StrEnum):
    """What happens on the server once a message is committed: ``mark_seen`` sets \\Seen
    (POP3: keeps it on the server), ``keep`` changes nothing at all (IMAP opens the folder
    read-only with EXAMINE; the UID cursor, not the flag, says what was taken), ``delete``
    removes it."""

    MARK_SEEN = "mark_seen"
    KEEP = "keep"
    DELETE = "delete"


class PushMode(StrEnum):
    """Whether new mail is watched for (IMAP IDLE, Graph change notifications) on top of the
    interval poll."""

    AUTO = "auto"  # watched when the server offers it; the interval poll stays the safety net
    OFF = "off"  # interval polls only


class FirstSync(StrEnum):
    """What the first poll of a mailbox takes (a mailbox the store has no cursor for)."""

    ALL = "all"  # every message in the folder
    UNSEEN = "unseen"  # IMAP: only messages without \\Seen
    SINCE = "since"  # IMAP: only messages that arrived on or after first_sync_since
    NONE = "none"  # IMAP: nothing already there; only mail that arrives from now on


GOOGLE_IMAP_HOST = "imap.gmail.com"
MICROSOFT_IMAP_HOST = "outlook.office365.com"
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 30_000
DEFAULT_FOLDER = "INBOX"


def default_port(transport: Transport, encryption: Encryption) -> int:
    """The port used when a connection leaves it blank or 0."""
    implicit_tls = encryption is Encryption.SSL
    if transport is Transport.POP3:
        return 995 if implicit_tls else 110
    return 993 if implicit_tls else 143


class ConnectionView(BaseModel):
    """A connection's attributes without any secret: what the API returns and the topic carries."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    id: UUID
    """The connection's id: the key of its records on every topic."""
    version: int
    """Grows by one with every change; the same state published again keeps it."""
    name: str
    """Unique (case-insensitive), 1–255 characters."""
    description: str | None
    """Free text."""
    protocol: Protocol
    """How the mailbox is reached and signed in to."""
    transport: Transport
    """What the fetcher speaks: IMAP, POP3 or Microsoft Graph (set by the protocol, a choice
    only for Microsoft)."""
    oauth_credential_id: UUID | None
    """OAuth2 protocols: the stored client credential used; else null."""
    encryption: Encryption
    """`ssl` (implicit TLS), `starttls` or `none`."""
    host: str | None
    """The mail server; null for Microsoft Graph."""
    port: int | None
    """The port; null or 0 means the default of the transport and encryption."""
    tls_verify: bool
    """Whether the server's certificate is verified."""
    tls_ca_pem: str | None
    """Extra CA certificates (PEM) trusted for this server."""
    interval_minutes: int
    """Minutes between polls."""
    timeout_ms: int
    """Time-out of each network step, in milliseconds."""
    folder: str | None
    """The folder polled (null means `INBOX`); null for POP3."""
    username: str
    """The account signed in as."""
    shared_mailbox: str | None
    """A shared mailbox opened with the account's sign-in; else null."""
    after_download: AfterDownload
    """What happens on the server once a message is stored: `mark_seen` (POP3: keep) or
    `delete`."""
    first_sync: FirstSync = FirstSync.ALL
    """What the first poll of a new mailbox takes: `all`, `unseen`, `since` or `none`."""
    first_sync_since: date | None = None
    """For `first_sync: since`: the first arrival date taken (inclusive); else null."""
    push: PushMode = PushMode.AUTO
    """`auto`: new mail is watched for (IMAP IDLE, Graph change notifications) when the
    server offers it, the interval poll staying the safety net; `off`: interval polls only."""
    enabled: bool
    """Whether the connection is polled."""
    created_at: datetime
    """When the connection was created."""
    updated_at: datetime
    """When it last changed (its `version` grew)."""


def transport_for(protocol: Protocol, transport: Transport | None) -> Transport:
    """The transport a protocol uses; only Microsoft offers a choice (IMAP or Graph)."""
    if protocol is Protocol.POP3:
        return Transport.POP3
    if protocol is Protocol.MICROSOFT_OAUTH2:
        return transport or Transport.IMAP
    return Transport.IMAP


def effective_host(protocol: Protocol, transport: Transport, host: str | None) -> str | None:
    if protocol is Protocol.GOOGLE_OAUTH2:
        return host or GOOGLE_IMAP_HOST
    if protocol is Protocol.MICROSOFT_OAUTH2:
        return None if transport is Transport.GRAPH else host or MICROSOFT_IMAP_HOST
    return host


def effective_port(transport: Transport, encryption: Encryption, port: int | None) -> int | None:
    if transport is Transport.GRAPH:
        return None
    return port or default_port(transport, encryption)


def effective_folder(transport: Transport, folder: str | None) -> str | None:
    if transport is Transport.POP3:
        return None
    return folder or DEFAULT_FOLDER
