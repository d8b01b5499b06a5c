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
    MARK_SEEN = "mark_seen"
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

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int
    name: str
    description: str | None
    protocol: Protocol
    transport: Transport
    oauth_credential_id: UUID | None
    encryption: Encryption
    host: str | None
    port: int | None
    tls_verify: bool
    tls_ca_pem: str | None
    interval_minutes: int
    timeout_ms: int
    folder: str | None
    username: str
    shared_mailbox: str | None
    after_download: AfterDownload
    first_sync: FirstSync = FirstSync.ALL
    first_sync_since: date | None = None
    push: PushMode = PushMode.AUTO
    enabled: bool
    created_at: datetime
    updated_at: datetime


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
