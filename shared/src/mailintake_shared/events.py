"""Wire contracts: every event mailintake publishes, as versioned, frozen pydantic models.

Values are JSON (UTF-8). Each model carries ``schema_version``; a consumer that meets a
version it does not know sends the record to the dead-letter topic instead of guessing.
Keys are the connection id (UUID text) on every topic.
"""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from mailintake_shared.domain import ConnectionView


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode("utf-8")


E = TypeVar("E", bound=Event)


def decode(model: type[E], value: bytes) -> E:
    """Parse one record value; raises ``pydantic.ValidationError`` on a bad record."""
    return model.model_validate_json(value)


class ConnectionState(Event):
    """Topic ``connections`` (compacted): a connection's current state after each change.

    A deleted connection is a tombstone (a null value) under its key. ``connection.version``
    grows with every change, so a reader that folds the topic keeps the highest version.
    """

    schema_version: Literal[1] = 1
    connection: ConnectionView


class PollReason(StrEnum):
    SCHEDULED = "scheduled"  # the connection's interval elapsed
    CONTINUATION = "continuation"  # the previous poll stopped at its budget with more pending
    MANUAL = "manual"  # an operator asked for a poll now
    RETRY = "retry"  # the previous poll failed, or never completed
    ACTIONS = "actions"  # committed messages wait for their server action
    PUSH = "push"  # the server announced new mail (IMAP IDLE, a Graph change notification)


class PollOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # the connection was disabled or deleted meanwhile


class ErrorKind(StrEnum):
    """Why a poll failed, by the step that failed."""

    DNS = "dns"
    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    TLS = "tls"
    STARTTLS_UNAVAILABLE = "starttls_unavailable"
    AUTHENTICATION = "authentication"
    AUTHORIZATION_REQUIRED = "authorization_required"  # OAuth2: the grant is gone
    FOLDER_MISSING = "folder_missing"
    UIDL_UNSUPPORTED = "uidl_unsupported"
    LEASE_LOST = "lease_lost"  # another fetcher owns the connection now
    ADDRESS_DENIED = "address_denied"  # the host resolves into a range connections may not reach
    THROTTLED = "throttled"  # the server asks for less: [LIMIT], [UNAVAILABLE], 429, BYE
    SERVER_ERROR = "server_error"
    BROKER = "broker"
    INTERNAL = "internal"


class PollDue(Event):
    """Topic ``poll.due`` (scheduler → fetcher): poll this connection now."""

    schema_version: Literal[1] = 1
    connection_id: UUID
    poll_id: UUID
    reason: PollReason
    issued_at: datetime


class PollRequested(Event):
    """Topic ``poll.requested`` (config-api, watcher → scheduler): poll this connection now,
    because an operator asked (``manual``) or the server announced new mail (``push``)."""

    schema_version: Literal[1] = 1
    connection_id: UUID
    requested_at: datetime
    reason: Literal[PollReason.MANUAL, PollReason.PUSH] = PollReason.MANUAL


def b64(data: bytes) -> str:
    """Binary data as base64 text, for JSON events."""
    return base64.b64encode(data).decode("ascii")


class FetchedChunk(Event):
    """Topic ``mail.fetched``, ``kind: message``: the envelope of one downloaded message, or
    of one chunk of it. The bytes themselves are the record's value (binary content mode, as
    in CloudEvents' Kafka binding): see ``mailintake_shared.fetched``.

    A message larger than the chunk size travels as several records with ``chunk_index``
    0, 1, …, in order on the connection's partition; the one with ``final`` set completes the
    message and carries the SHA-256 of the whole, which the store checks after assembly (a
    message in a single record carries none: the broker's CRC covers it). ``server_id`` is
    the dedup key within the folder (IMAP: ``UIDVALIDITY:UID``).
    """

    kind: Literal["message"] = "message"
    schema_version: Literal[1] = 1
    connection_id: UUID
    poll_id: UUID
    folder: str
    server_id: str
    uidvalidity: int | None
    uid: int | None
    size: int
    internal_date: datetime | None
    seen_before: bool = Field(description="the server already had \\Seen (read by a person)")
    chunk_index: int
    final: bool
    sha256: str | None = None
    lease_token: int | None = Field(
        None, description="the fetcher's fencing token: the store drops records of a stale one"
    )


class Unfetched(BaseModel):
    """A message a poll asked for that the server still holds but did not deliver, with the
    server's own words (``reason``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server_id: str
    uid: int | None = None
    reason: str


class PollResult(Event):
    """Topic ``mail.fetched``, ``kind: poll_result``: how a poll went; after its messages.

    The poll's ledger: every message it asked for was published (before this record, on the
    same partition), confirmed gone from the server, or is listed in ``unfetched``. For IMAP,
    ``cursor_from`` is the folder's cursor the poll started from (it asked for the UIDs above
    it) and ``cursor_to`` the UID up to which every message asked for is accounted for; the
    store moves the cursor there once every message the poll published is committed, and
    only from ``cursor_from`` (so that a later poll never moves it past an earlier one's gap).
    """

    kind: Literal["poll_result"] = "poll_result"
    schema_version: Literal[1] = 1
    connection_id: UUID
    poll_id: UUID
    reason: PollReason
    outcome: PollOutcome
    error_kind: ErrorKind | None = None
    error: str | None = None
    folder: str | None = None
    uidvalidity: int | None = None
    baseline_uid: int | None = Field(
        None, description="set by the first poll of a mailbox with a first-sync mode"
    )
    delta_link: str | None = Field(
        None, description="Microsoft Graph: where the next poll resumes the delta query"
    )
    messages: int = 0
    bytes: int = 0
    cursor_from: int | None = Field(None, description="IMAP: the cursor the poll started from")
    cursor_to: int | None = Field(
        None, description="IMAP: every UID asked for up to this one is accounted for"
    )
    retried: list[str] = Field(
        default_factory=list,
        description="server ids of messages that earlier polls could not download, tried again",
    )
    unfetched: list[Unfetched] = Field(
        default_factory=list,
        description="messages asked for that the server holds but did not deliver",
    )
    more_pending: bool = False
    actions_applied: int = 0
    lease_token: int | None = None
    started_at: datetime
    finished_at: datetime


class HeaderSummary(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    from_: str | None = Field(None, alias="from")
    to: str | None = None
    cc: str | None = None
    subject: str | None = None
    date: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None


class SmimeInfo(BaseModel):
    """What the store found in an S/MIME message. ``problem`` says why a layer stayed
    closed (no matching key, an expired certificate, a corrupt envelope …) or what is wrong
    with a signature; the message is stored either way. Mutable: the store fills it in one
    S/MIME layer at a time."""

    encrypted: bool = Field(False, description="the message was encrypted (enveloped data)")
    decrypted_with: UUID | None = Field(None, description="the certificate that decrypted it")
    signature: Literal["valid", "invalid", "unverifiable"] | None = Field(
        None, description="the signature check's result; null when the message is not signed"
    )
    signer: str | None = Field(None, description="the signer's e-mail address, else subject")
    problem: str | None = None

    @property
    def unopened(self) -> bool:
        """Encrypted, and no certificate of the connection decrypted it."""
        return self.encrypted and self.decrypted_with is None


class MailStored(Event):
    """Topic ``mail.stored`` (store → downstream): a message was committed to the database.

    ``message_id`` is the database id: the dedup key for downstream consumers. The raw MIME is
    inline (``raw_b64``) up to ``MAILINTAKE_INLINE_MAX_BYTES``; always available from the
    config API at ``raw_path`` (``GET /messages/{id}/raw``, bearer token needed).

    An S/MIME message has ``smime`` set: ``raw_b64`` and ``raw_path`` then carry it with the
    layers the connection's certificates opened removed (decrypted, unwrapped); ``size`` and
    ``sha256`` stay those of the message as fetched, which ``raw_path?original=true`` returns.
    """

    schema_version: Literal[1] = 1
    message_id: int
    connection_id: UUID
    folder: str
    server_id: str
    size: int
    sha256: str
    internal_date: datetime | None
    stored_at: datetime
    headers: HeaderSummary
    problems: list[str] = Field(default_factory=list)
    raw_b64: str | None = None
    raw_path: str
    smime: SmimeInfo | None = None


class PollCompleted(Event):
    """Topic ``poll.completed`` (store → scheduler): a poll's messages are all committed."""

    schema_version: Literal[1] = 1
    connection_id: UUID
    poll_id: UUID
    outcome: PollOutcome
    error_kind: ErrorKind | None = None
    more_pending: bool = False
    stored: int = 0
    duplicates: int = 0
    actions_pending: int = 0
    consecutive_failures: int = 0
    finished_at: datetime


class DeadLetter(Event):
    """Topic ``deadletter``: a record a service could not process, with the reason."""

    schema_version: Literal[1] = 1
    service: str
    reason: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value_b64: str | None
    headers: dict[str, str] = Field(
        default_factory=dict, description="the record's headers, values as UTF-8 or base64"
    )
    failed_at: datetime


class HealthState(StrEnum):
    STALLED = "stalled"
    RECOVERED = "recovered"


class ConnectionHealthChanged(Event):
    """Topic ``connection.health`` (compacted; scheduler → operators' alerting): a connection
    has had no successful poll for ``MAILINTAKE_STALLED_AFTER_SECONDS`` (or its poll never
    completed), or it has recovered from that."""

    schema_version: Literal[1] = 1
    connection_id: UUID
    state: HealthState
    reason: str
    last_success_at: datetime | None
    at: datetime
