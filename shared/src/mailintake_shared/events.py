"""Wire contracts: every event mailintake publishes, as versioned, frozen pydantic models.

Values are JSON (UTF-8). Each model carries ``schema_version``; a consumer that meets a
version it does not know sends the record to the dead-letter topic instead of guessing.
Keys are the connection id (UUID text) on every topic. Each field's docstring is its
description in the JSON Schemas, the AsyncAPI document and docs/topics.md (``make contracts``).
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
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, use_attribute_docstrings=True
    )

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
    """The event's version: a consumer refuses one it does not know."""
    connection: ConnectionView
    """The connection's attributes after the change, without any secret."""


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


class Resume(BaseModel):
    """IMAP: where a poll's next slice goes on (the slice's ledger), when the store has not
    committed the slice yet and the stored cursor is still behind."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    uidvalidity: int
    """The folder's UIDVALIDITY the slice saw: a resume of another epoch is not used."""
    last_uid: int
    """Every UID up to this one is accounted for by the slices before."""
    baseline_uid: int | None = None
    """The mailbox's first-sync baseline, when it has one."""


class PollDue(Event):
    """Topic ``poll.due`` (scheduler → fetcher): poll this connection now."""

    schema_version: Literal[1] = 1
    """The event's version: a consumer refuses one it does not know."""
    connection_id: UUID
    """The connection to poll (also the record's key)."""
    poll_id: UUID
    """The poll's id: its records on `mail.fetched` and its `poll.completed` carry it."""
    reason: PollReason
    """Why the poll is due."""
    issued_at: datetime
    """When the scheduler issued it; a fetcher skips one older than the poll time-out."""
    resume: Resume | None = None
    """A continuation: where the previous slice left off (null: from the stored cursor)."""


class PollRequested(Event):
    """Topic ``poll.requested`` (config-api, watcher, fetcher → scheduler): poll a connection
    now — an operator asked (config-api, ``manual``), the server announced new mail (watcher,
    ``push``), or a poll stopped at its budget with more mail waiting and its next slice is to
    follow at once, without waiting for the store (fetcher)."""

    schema_version: Literal[1] = 1
    """The event's version: a consumer refuses one it does not know."""
    connection_id: UUID
    """The connection to poll (also the record's key)."""
    requested_at: datetime
    """When the operator (or the watcher, or the fetcher) asked."""
    reason: Literal[PollReason.MANUAL, PollReason.PUSH] = PollReason.MANUAL
    """`manual` (an operator) or `push` (the server announced new mail); a continuation
    carries the default and is told by `after_poll_id`."""
    after_poll_id: UUID | None = None
    """A continuation: the poll whose slice ended with more pending (null: an operator's or a
    watcher's request)."""
    resume: Resume | None = None
    """A continuation of an IMAP poll: where its next slice goes on."""


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
    """Tells a message chunk from a poll result."""
    schema_version: Literal[1] = 1
    """The envelope's version: the store refuses one it does not know."""
    connection_id: UUID
    """The connection polled (also the record's key)."""
    poll_id: UUID
    """The poll that downloaded the message."""
    folder: str
    """The folder it came from (`INBOX` for POP3)."""
    server_id: str
    """The dedup key within the folder: IMAP `UIDVALIDITY:UID`, POP3 UIDL, Graph immutable id."""
    uidvalidity: int | None
    """IMAP: the folder's UIDVALIDITY; null for POP3 and Graph."""
    uid: int | None
    """IMAP: the message's UID; null for POP3 and Graph."""
    size: int
    """Bytes of the whole message (not of this chunk)."""
    internal_date: datetime | None
    """When the server received the message (IMAP INTERNALDATE, Graph receivedDateTime);
    null when the server does not say (POP3)."""
    seen_before: bool = Field(description="the server already had \\Seen (read by a person)")
    chunk_index: int
    """0, 1, … : the chunk's place in the message."""
    final: bool
    """The last chunk of the message."""
    sha256: str | None = None
    """On the final chunk of a message sent in several: the SHA-256 (hex) of the whole;
    else null."""
    lease_token: int | None = Field(
        None, description="the fetcher's fencing token: the store drops records of a stale one"
    )
    headers: HeaderSummary | None = None
    """On the final chunk: the message's header summary as the fetcher read it (the store
    takes it as it is); null on other chunks."""
    problems: list[str] = Field(default_factory=list)
    """On the final chunk: what the fetcher found odd in the message (as `mail.stored`'s
    `problems`)."""
    smime: bool = False
    """On the final chunk: the header says S/MIME (the store opens it)."""


class FetchedBatch(Event):
    """Topic ``mail.fetched``, ``kind: message_batch``: several whole messages in one record
    (small mail: one record each would cost more in the Kafka clients than the rest of the
    pipeline's work). The record's value is the messages' bytes one after the other;
    ``lengths`` splits it. Each envelope is that of a message sent alone (``chunk_index`` 0,
    ``final``), in the order the fetcher downloaded them."""

    kind: Literal["message_batch"] = "message_batch"
    """Tells a batch of messages from a message chunk and a poll result."""
    schema_version: Literal[1] = 1
    """The batch's version: the store refuses one it does not know."""
    messages: list[FetchedChunk]
    """The envelopes, in order."""
    lengths: list[int]
    """Bytes of each message in the record's value, in the same order."""


class Unfetched(BaseModel):
    """A message a poll asked for that the server still holds but did not deliver."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    server_id: str
    """The message's dedup key (IMAP `UIDVALIDITY:UID`, POP3 UIDL, Graph id)."""
    uid: int | None = None
    """IMAP: its UID."""
    reason: str
    """What the server answered instead of the message, in its own words."""


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
    """Tells a poll result from a message chunk."""
    schema_version: Literal[1] = 1
    """The result's version: the store refuses one it does not know."""
    connection_id: UUID
    """The connection polled (also the record's key)."""
    poll_id: UUID
    """The poll, as `poll.due` named it."""
    reason: PollReason
    """Why the poll ran."""
    outcome: PollOutcome
    """How the poll ended."""
    error_kind: ErrorKind | None = None
    """The step that failed; null unless the outcome is `failed`."""
    error: str | None = None
    """The failure in words (the server's own, secrets removed); null on success."""
    folder: str | None = None
    """The folder polled; null when the poll failed before opening it."""
    uidvalidity: int | None = None
    """IMAP: the folder's UIDVALIDITY during the poll."""
    baseline_uid: int | None = Field(
        None, description="set by the first poll of a mailbox with a first-sync mode"
    )
    delta_link: str | None = Field(
        None, description="Microsoft Graph: where the next poll resumes the delta query"
    )
    messages: int = 0
    """Messages the poll published."""
    bytes: int = 0
    """Bytes of the messages the poll published."""
    cursor_from: int | None = None
    """IMAP: the folder's cursor the poll started from (it asked for the UIDs above it)."""
    cursor_to: int | None = None
    """IMAP: every UID asked for up to this one is accounted for (published, confirmed gone,
    or in `unfetched`): where the store moves the cursor once the poll's records are in."""
    retried: list[str] = Field(default_factory=list)
    """Server ids of messages earlier polls could not download, tried again by this one."""
    unfetched: list[Unfetched] = Field(default_factory=list)
    """Messages asked for that the server holds but did not deliver: pending downloads."""
    more_pending: bool = False
    """The poll stopped at its budget with more mail waiting: a continuation follows."""
    actions_applied: int = 0
    """Server actions (\\Seen, delete) the poll applied to committed messages."""
    lease_token: int | None = None
    """The fetcher's fencing token: the store drops the result of a stale one."""
    started_at: datetime
    """When the poll began."""
    finished_at: datetime
    """When the poll ended."""


class HeaderSummary(BaseModel):
    """The message's main header fields, decoded to text (RFC 2047); null when absent."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, use_attribute_docstrings=True)

    from_: str | None = Field(None, alias="from")
    """From."""
    to: str | None = None
    """To."""
    cc: str | None = None
    """Cc."""
    subject: str | None = None
    """Subject."""
    date: str | None = None
    """Date, as the sender wrote it (not parsed)."""
    message_id: str | None = None
    """Message-ID, with its angle brackets (not the event's `message_id`)."""
    in_reply_to: str | None = None
    """In-Reply-To."""
    references: str | None = None
    """References."""


class SmimeInfo(BaseModel):
    """What the store found in an S/MIME message. ``problem`` says why a layer stayed
    closed (no matching key, an expired certificate, a corrupt envelope …) or what is wrong
    with a signature; the message is stored either way. Mutable: the store fills it in one
    S/MIME layer at a time."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    encrypted: bool = Field(False, description="the message was encrypted (enveloped data)")
    decrypted_with: UUID | None = Field(None, description="the certificate that decrypted it")
    signature: Literal["valid", "invalid", "unverifiable"] | None = Field(
        None, description="the signature check's result; null when the message is not signed"
    )
    signer: str | None = Field(None, description="the signer's e-mail address, else subject")
    problem: str | None = None
    """Why a layer stayed closed, or what is wrong with the signature; null when none."""

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
    """The event's version: a consumer refuses one it does not know."""
    message_id: int
    """The stored message's id, unique across every connection: the dedup key."""
    connection_id: UUID
    """The connection the message came from (also the record's key)."""
    folder: str
    """The folder it came from (`INBOX` for POP3)."""
    server_id: str
    """The server's id of the message: IMAP `UIDVALIDITY:UID`, POP3 UIDL, Graph immutable id."""
    size: int
    """Bytes of the message as fetched."""
    sha256: str
    """SHA-256 (hex) of the message as fetched: equal for the same mail in two mailboxes."""
    internal_date: datetime | None
    """When the server received the message (IMAP INTERNALDATE, Graph receivedDateTime);
    null when the server does not say (POP3)."""
    stored_at: datetime
    """When the message was committed to the database."""
    headers: HeaderSummary
    """The main header fields, decoded."""
    problems: list[str] = Field(default_factory=list)
    """What the store noticed in the header (no Message-ID, 8-bit or NUL bytes, no
    header/body separator, parser defects); S/MIME findings are in `smime`."""
    raw_b64: str | None = None
    """The raw MIME, base64, up to `MAILINTAKE_INLINE_MAX_BYTES`; null for larger mail."""
    raw_path: str
    """Where the config API serves the raw MIME: `GET {api}{raw_path}` with a bearer token."""
    smime: SmimeInfo | None = None
    """S/MIME findings; null for other mail."""


class PollCompleted(Event):
    """Topic ``poll.completed`` (store → scheduler): a poll's messages are all committed."""

    schema_version: Literal[1] = 1
    """The event's version: a consumer refuses one it does not know."""
    connection_id: UUID
    """The connection polled (also the record's key)."""
    poll_id: UUID
    """The poll, as `poll.due` named it."""
    outcome: PollOutcome
    """How the poll ended."""
    error_kind: ErrorKind | None = None
    """The step that failed; null unless the outcome is `failed`."""
    more_pending: bool = False
    """More mail waits (the poll stopped at its budget, or some of its records were lost on
    the way): the scheduler issues a continuation at once."""
    stored: int = 0
    """Messages of the poll stored."""
    duplicates: int = 0
    """Messages of the poll already stored (not stored again)."""
    actions_pending: int = 0
    """How many of the connection's stored messages still wait for their server action
    (\\Seen or delete): a count, not a list."""
    consecutive_failures: int = 0
    """Failed polls in a row, this one included; 0 after a success."""
    finished_at: datetime
    """When the fetcher finished the poll."""


class DeadLetter(Event):
    """Topic ``deadletter``: a record a service could not process, with the reason."""

    schema_version: Literal[1] = 1
    """The event's version: a consumer refuses one it does not know."""
    service: str
    """The service that could not process the record."""
    reason: str
    """Why (at most 2,000 characters)."""
    source_topic: str
    """The record's topic (physical name)."""
    partition: int
    """The record's partition."""
    offset: int
    """The record's offset."""
    key: str | None
    """The record's key (UTF-8; invalid bytes replaced), null when it had none."""
    value_b64: str | None
    """The record's value, base64; null for a null value."""
    headers: dict[str, str] = Field(
        default_factory=dict, description="the record's headers, values as UTF-8 or base64"
    )
    failed_at: datetime
    """When the record was set aside."""


class HealthState(StrEnum):
    STALLED = "stalled"
    RECOVERED = "recovered"


class ConnectionHealthChanged(Event):
    """Topic ``connection.health`` (compacted; scheduler → operators' alerting): a connection
    has had no successful poll for ``MAILINTAKE_STALLED_AFTER_SECONDS`` (or its poll never
    completed), or it has recovered from that."""

    schema_version: Literal[1] = 1
    """The event's version: a consumer refuses one it does not know."""
    connection_id: UUID
    """The connection (also the record's key)."""
    state: HealthState
    """`stalled`, or `recovered` (a poll succeeded again, or the connection was disabled or
    deleted)."""
    reason: str
    """Why, in words."""
    last_success_at: datetime | None
    """When a poll of the connection last succeeded; null if none ever did."""
    at: datetime
    """When the scheduler noticed."""


class StoreWaiting(Event):
    """Topic ``store.waiting`` (compacted; store → config API): records downloaded for the
    connection wait for the store, which cannot write them — the database refuses writes or
    is out of reach, so it cannot say so itself. Sent again at every retry; a tombstone when
    the connection's records are written."""

    schema_version: Literal[1] = 1
    """The event's version: a consumer refuses one it does not know."""
    connection_id: UUID
    """The connection (also the record's key)."""
    reason: str = Field(max_length=500)
    """Why the store cannot write, in the database's own words."""
    since: datetime
    """When the store first failed to write the connection's records."""
    at: datetime
    """When the store said it (at every retry)."""
