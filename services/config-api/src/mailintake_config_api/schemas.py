"""Request and response bodies of the connections API.

Per-field rules live on the fields (each error names the field and says the rule in
words); rules that join several fields live in ``rules.py`` and run on the merged state,
so that a create and an update are judged alike.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Annotated, Generic, TypeVar
from uuid import UUID

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from mailintake_config_api.incoming import EntryKind, QueueState
from mailintake_shared.domain import (
    MAX_TIMEOUT_MS,
    AfterDownload,
    ConnectionView,
    Encryption,
    FirstSync,
    Protocol,
    PushMode,
    Transport,
)
from mailintake_shared.events import ErrorKind, SmimeInfo
from mailintake_shared.mailbox.estimate import Confidence
from mailintake_shared.oauth.providers import OAuthProvider
from mailintake_shared.watch import WatchMethod, WatchState

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")

LINE_BREAKS = "\t\r\n"  # what free text (a description, PEM) may hold of the control characters


def control_character(text: str, allowed: str = "") -> str | None:
    """The first C0 or C1 control character of ``text`` that is not in ``allowed``, as
    ``U+000D``; None when there is none."""
    for char in text:
        if unicodedata.category(char) == "Cc" and char not in allowed:
            return f"U+{ord(char):04X}"
    return None


def _plain(value: str | SecretStr | None, info: ValidationInfo) -> str | SecretStr | None:
    """Refuses every control character: CR, LF and NUL would end or split an IMAP or POP3
    command line (RFC 3501 section 9, RFC 1939 section 3), and PostgreSQL has no NUL in
    text."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    found = control_character(text) if text is not None else None
    if found is not None:
        name = info.field_name or "the value"
        raise ValueError(
            f"{name} must be text without control characters (CR, LF, NUL …; found {found})"
        )
    return value


def _free_text(value: str | None, info: ValidationInfo) -> str | None:
    """Free text: tabs and line breaks, but no other control character (no NUL)."""
    found = control_character(value, LINE_BREAKS) if value is not None else None
    if found is not None:
        name = info.field_name or "the value"
        raise ValueError(
            f"{name} must not contain control characters but tabs and line breaks (found {found})"
        )
    return value


PlainText = Annotated[str, AfterValidator(_plain)]


def utc(value: datetime | None) -> datetime | None:
    """A time as UTC: one without an offset is read as UTC (``2026-11-24`` is midnight UTC);
    one that is no time in UTC (``0001-01-01T00:00+14:00``) is refused."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a time between the years 1 and 9999 in UTC") from None


UtcTime = Annotated[datetime, AfterValidator(utc)]
SINCE = "From this time (inclusive; UTC when it has no offset)."
UNTIL = "Up to this time (exclusive; UTC when it has no offset)."
Name = Annotated[PlainText, Field(description="Unique name (case-insensitive), 1–255 characters.")]
# Bounded so that the database's BIGINT takes them (a larger one answers 422, not a 500).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The row's id.")]
Offset = Annotated[int, Query(ge=0, le=2**63 - 1, description="Items to skip.")]


def _strip_or_none(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


class _ConnectionFields(BaseModel):
    """Fields and per-field rules shared by create and update (all optional here)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: str | None = Field(None, max_length=10_000, description="Free text.")
    protocol: Protocol | None = None
    transport: Transport | None = Field(
        None, description="`imap` or `graph`; Microsoft OAuth2 only (default `imap`)."
    )
    oauth_credential_id: UUID | None = Field(
        None, description="The stored OAuth2 credential; required for the OAuth2 protocols."
    )
    encryption: Encryption | None = Field(
        None, description="IMAP and POP3: `none`, `ssl` (implicit TLS) or `starttls`."
    )
    host: str | None = Field(None, description="Mail server; required for IMAP and POP3.")
    port: int | None = Field(None, description="Blank or 0: 143/993 (IMAP), 110/995 (POP3).")
    tls_verify: bool | None = Field(
        None, description="Verify the server's certificate (default true)."
    )
    tls_ca_pem: str | None = Field(
        None, description="PEM CA certificates to trust for this connection's server."
    )
    interval_minutes: int | None = Field(None, description="Minutes between polls, ≥ 1.")
    timeout_ms: int | None = Field(None, description="1–30000 ms; blank or 0: 30000.")
    folder: str | None = Field(None, description="IMAP folder; blank: INBOX.")
    username: str | None = None
    shared_mailbox: str | None = Field(
        None, max_length=512, description="Alias of a shared mailbox to open."
    )
    password: SecretStr | None = Field(
        None,
        description="IMAP and POP3 only; any Unicode text without control characters (SASL "
        "PLAIN carries UTF-8); write-only, never returned; asked again when the destination "
        "changes.",
    )
    after_download: AfterDownload | None = Field(
        None,
        description="`mark_seen` (default; POP3: keep on server), `keep` (the server is left "
        "exactly as it is: no flag changed, IMAP folders opened read-only) or `delete`.",
    )
    first_sync: FirstSync | None = Field(
        None,
        description="What the first poll of the mailbox takes: `all` (default), `unseen`, "
        "`since` (arrived on or after `first_sync_since`) or `none` (only mail arriving from "
        "now on). IMAP only; POP3 takes `all`.",
    )
    first_sync_since: date | None = Field(
        None, description="The date for `first_sync: since` (server's internal date, inclusive)."
    )
    push: PushMode | None = Field(
        None,
        description="`auto` (default): watch the mailbox, so that new mail is polled within "
        "seconds when the server announces it (IMAP IDLE, Microsoft Graph change "
        "notifications), the interval poll staying as a safety net; `off`: interval polls only.",
    )

    _strip = field_validator(
        "description", "host", "folder", "shared_mailbox", "tls_ca_pem", mode="before"
    )(_strip_or_none)
    # Everything that reaches a mail server is one command-line argument: no CR, LF or NUL.
    _plain_fields = field_validator("name", "username", "shared_mailbox", "folder", "password")(
        _plain
    )
    _free_text_fields = field_validator("description", "tls_ca_pem")(_free_text)

    @field_validator("name", "username", mode="before")
    @classmethod
    def _strip_required(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= 255:
            raise ValueError("name must be 1 to 255 characters")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= 512:
            raise ValueError("username must be 1 to 512 characters")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            pass
        if not _HOSTNAME.fullmatch(value):
            raise ValueError("host must be a hostname or an IP address")
        return value.lower()

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 65535:
            raise ValueError("port must be between 1 and 65535 (0 or blank for the default)")
        return value or None

    @field_validator("interval_minutes")
    @classmethod
    def _interval(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 10_080:
            raise ValueError("interval must be between 1 and 10080 minutes")
        return value

    @field_validator("timeout_ms")
    @classmethod
    def _timeout(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_TIMEOUT_MS:
            raise ValueError("timeout must be between 1 and 30000 ms (0 or blank for 30000)")
        return value or None

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 1024:
            raise ValueError("folder must be at most 1024 characters")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 1 <= len(value.get_secret_value()) <= 1024:
            raise ValueError("password must be 1 to 1024 characters")
        return value


class ConnectionCreate(_ConnectionFields):
    """A new connection; it starts disabled."""

    name: Name
    protocol: Protocol
    username: str
    interval_minutes: int | None = Field(5, description="Minutes between polls, ≥ 1.")


class ConnectionTestRequest(ConnectionCreate):
    """An unsaved connection to test; the name is not needed."""

    name: Name = "(unsaved)"


class ConnectionUpdate(_ConnectionFields):
    """A partial update: only the fields sent change; `null` clears an optional field."""


class ConnectionHealth(BaseModel):
    """How the connection's polls have been going (empty until its first poll)."""

    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error_kind: str | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    messages_stored: int = 0
    stalled: bool = Field(
        False,
        description="Enabled, and no successful poll for MAILINTAKE_STALLED_AFTER_SECONDS.",
    )
    waiting_for_store: str | None = Field(
        None,
        description="Mail downloaded for this connection that the store cannot write yet: "
        "`downloaded, waiting for the store: <reason>` (the database refuses writes, is out of "
        "reach …); null when nothing waits. The mail stays on the server until it is stored.",
    )
    waiting_since: datetime | None = Field(
        None, description="When the store first failed to write it."
    )


class WatchStatus(BaseModel):
    """Whether the server announces the connection's new mail (push), since when, and why
    not; interval polls go on either way."""

    watched: bool = Field(description="New mail is announced: polls follow within seconds.")
    state: WatchState = Field(
        description="`watching`; `connecting`; `retrying` (the watch broke and reconnects with "
        "back-off); `waiting` (another watcher holds it, or the session budget leaves no "
        "session for it); `unsupported` (the server has no IDLE, or Graph notifications are not "
        "set up); `off` (push off, disabled, or POP3); `unknown` (no watcher reports it)."
    )
    method: WatchMethod | None = Field(
        None, description="`imap_idle` or `graph` (a change-notification subscription)."
    )
    since: datetime | None = Field(None, description="When the connection entered this state.")
    reason: str | None = Field(None, description="Why it is not watched, in words.")


class ConnectionPublic(ConnectionView):
    """A connection as the API returns it: defaults applied, secrets left out."""

    has_password: bool
    authorization: str | None = Field(
        None,
        description="OAuth2 connections: `not_authorized`, `authorized` or "
        "`authorization_required` (the grant was revoked or expired: authorize again).",
    )
    status: ConnectionHealth = Field(default_factory=ConnectionHealth)
    watch: WatchStatus = Field(
        default_factory=lambda: WatchStatus(watched=False, state=WatchState.UNKNOWN)
    )


class ConnectionEnabled(ConnectionPublic):
    """The answer to enabling: the connection, and when it is polled."""

    first_poll: str = Field(
        description="When the first poll runs: at once when the connection was just enabled."
    )


class PollAccepted(BaseModel):
    connection_id: UUID
    requested_at: datetime
    poll_in_progress: bool = Field(
        False, description="A poll of the connection is under way: this one runs right after it."
    )
    detail: str = Field(description="When the poll runs.")


class MessageInfo(BaseModel):
    """A stored message's identity and header summary (the raw MIME is at ``raw_path``)."""

    id: int
    connection_id: UUID
    folder: str
    server_id: str
    size: int
    sha256: str
    internal_date: datetime | None
    stored_at: datetime
    subject: str | None
    header_from: str | None
    message_id_header: str | None
    problems: list[str]
    action_state: str
    raw_path: str
    smime: SmimeInfo | None = Field(
        None, description="S/MIME findings; `raw_path` then serves the decrypted form."
    )


class ConnectionPage(BaseModel):
    items: list[ConnectionPublic]
    total: int
    limit: int
    offset: int


class FieldError(BaseModel):
    field: str
    rule: str


class ErrorBody(BaseModel):
    """Every 4xx answer has this shape."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class ProbeStep(BaseModel):
    name: str = Field(description="`dns`, `connect` (TCP, and TLS for ssl) or `session`.")
    ok: bool
    milliseconds: float


class ConnectionTestResult(BaseModel):
    """The outcome of a connection test; never contains the password."""

    ok: bool
    failed_step: ErrorKind | None = Field(
        None,
        description="What failed: `dns`, `connection_refused`, `timeout`, `tls` (with the "
        "certificate problem), `starttls_unavailable`, `authentication`, `folder_missing`, "
        "`uidl_unsupported`, `server_error`.",
    )
    error: str | None = None
    greeting: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    messages: int | None = Field(None, description="Messages in the folder (POP3: mailbox).")
    latency_ms: float
    steps: list[ProbeStep] = Field(default_factory=list)


class EnableRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    acknowledge_messages: int | None = Field(
        None,
        ge=0,
        description="The estimate (or more) the administrator agreed to download; required "
        "when the estimate exceeds `MAILINTAKE_ENABLE_ACK_THRESHOLD`.",
    )
    skip_estimate: bool = Field(
        False, description="Enable without contacting the server (no estimate, no check)."
    )


class EstimateBody(BaseModel):
    messages: int = Field(description="Messages the first poll(s) would download.")
    confidence: Confidence = Field(
        description="`exact`: the poll's own rule; `upper_bound`: the folder's UIDVALIDITY "
        "changed, so all are downloaded again and the known ones are not stored twice."
    )
    known_mailbox: bool = Field(description="The store already has state for this mailbox.")
    first_sync: FirstSync


class EnableConflict(BaseModel):
    """409: the first poll would download messages; repeat with `acknowledge_messages`."""

    detail: str
    estimate: EstimateBody


class EstimateFailed(BaseModel):
    """502: the server could not be asked for an estimate."""

    detail: str
    test: ConnectionTestResult


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    total: int
    limit: int
    offset: int


class QueueEntry(BaseModel):
    """A message not all the way through (see the Incoming Mail Queue in the README)."""

    kind: EntryKind = Field(description="`message` (stored) or `failed` (not stored).")
    id: int
    connection_id: UUID
    folder: str
    server_id: str
    state: QueueState
    size: int
    subject: str | None
    header_from: str | None
    reason: str | None = Field(description="Why it failed, or the header problems noticed.")
    at: datetime = Field(description="When it was stored, or when it failed.")
    raw_path: str


class QueueActionDone(BaseModel):
    detail: str


class PollLogEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    poll_id: UUID
    connection_id: UUID
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    error_kind: str | None
    error: str | None
    fetched: int
    bytes: int
    stored: int
    duplicates: int
    more_pending: bool


class MessageLogEntry(BaseModel):
    """A message record the store received, and what became of the message since."""

    id: int
    connection_id: UUID
    poll_id: UUID | None
    folder: str
    server_id: str
    message_id: int | None
    outcome: str = Field(
        description="`stored`, `duplicate` (skipped), `rejected`, or `unfetched` (asked for, "
        "not delivered by the server; `detail` has the attempt and the server's words)."
    )
    detail: str | None
    size: int
    downloaded_at: datetime | None
    logged_at: datetime
    published_at: datetime | None = Field(description="When `mail.stored` went out.")
    action_state: str | None = Field(description="`pending`, `applied` or `stale`.")
    action_applied_at: datetime | None


class OAuthCredentialFields(BaseModel):
    """An OAuth2 credential's attributes but its secret (what a create and a restore judge)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    provider: OAuthProvider
    client_id: PlainText = Field(min_length=1, max_length=512)
    tenant: PlainText | None = Field(
        None,
        max_length=255,
        description="Microsoft: the directory (tenant) id or domain; blank: `common`.",
    )
    scopes: list[PlainText] | None = Field(
        None,
        description="Blank: Google `https://mail.google.com/`; Microsoft IMAP "
        "`https://outlook.office.com/IMAP.AccessAsUser.All`; Microsoft Graph "
        "`https://graph.microsoft.com/Mail.ReadWrite`; app-only "
        "`https://graph.microsoft.com/.default`.",
    )
    app_only: bool = Field(
        False,
        description="Microsoft Graph with application permissions (Mail.ReadWrite granted to "
        "the app by an administrator): tokens by the client credentials grant, no sign-in.",
    )

    @field_validator("tenant", "app_only")
    @classmethod
    def _microsoft_only(cls, value: object, info: ValidationInfo) -> object:
        if value and info.data.get("provider") is OAuthProvider.GOOGLE:
            raise ValueError(f"{info.field_name} applies to Microsoft only")
        return value or (None if info.field_name == "tenant" else False)


class OAuthCredentialCreate(OAuthCredentialFields):
    """An app registered with Google or Microsoft Entra (client id and secret)."""

    client_secret: SecretStr = Field(description="Write-only; stored encrypted.")

    _plain_secret = field_validator("client_secret")(_plain)


class OAuthCredentialUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    client_id: PlainText | None = Field(None, min_length=1, max_length=512)
    client_secret: SecretStr | None = Field(
        None, description="Write-only; required again when `tenant` changes."
    )
    tenant: PlainText | None = Field(None, max_length=255)
    scopes: list[PlainText] | None = None

    _plain_secret = field_validator("client_secret")(_plain)


class OAuthCredentialPublic(BaseModel):
    id: UUID
    name: str
    provider: str
    client_id: str
    tenant: str | None
    scopes: list[str] | None
    app_only: bool
    has_client_secret: bool
    created_at: datetime
    updated_at: datetime


class AuthorizationStarted(BaseModel):
    authorization_url: str = Field(description="Open it in a browser and sign in.")
    expires_at: datetime


class AuditLogEntry(BaseModel):
    """One configuration change through the API: no field values, only their names."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str = Field(description="`role:` and the first 12 hex digits of the token's SHA-256.")
    client: str | None = Field(description="The caller's address.")
    action: str = Field(description="Method and route, e.g. `PATCH /connections/{connection_id}`.")
    target: str | None = Field(description="The route's parameters, as JSON.")
    fields: str | None = Field(description="The names of the fields sent, as a JSON list.")
    status: int = Field(description="The HTTP status of the answer.")


class CertificateUpload(BaseModel):
    """A certificate with its private key, for decrypting a connection's S/MIME mail.

    Exactly one of ``pem`` and ``pkcs12_base64``. The key and the passphrase are write-only:
    the key is kept encrypted at rest, the passphrase only opens the upload.
    """

    model_config = ConfigDict(extra="forbid")

    name: PlainText = Field(min_length=1, max_length=255)
    alias: PlainText | None = Field(None, max_length=255, description="Another name to search by.")
    pem: SecretStr | None = Field(
        None,
        description="PEM: the certificate and its private key (PKCS#8, PKCS#1 or SEC1, "
        "encrypted with `passphrase` or not).",
    )
    pkcs12_base64: SecretStr | None = Field(
        None, description="A PKCS#12 (.p12/.pfx) file, base64-encoded."
    )
    passphrase: SecretStr | None = Field(None, description="Opens the key or the PKCS#12 file.")

    @field_validator("pem", "pkcs12_base64", "passphrase")
    @classmethod
    def _bounded(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 1 <= len(value.get_secret_value()) <= 200_000:
            raise ValueError("must be 1 to 200000 characters")
        return value


class CertificateView(BaseModel):
    """A stored certificate; its private key is never returned."""

    id: UUID
    name: str
    alias: str | None
    subject: str
    issuer: str
    serial: str = Field(description="Hexadecimal.")
    not_before: datetime
    not_after: datetime
    expired: bool
    fingerprint_sha256: str
    key_type: str = Field(description="`rsa` or `ec`.")
    connections: list[UUID] = Field(description="The connections that use it.")
    created_at: datetime


class CertificateLinks(BaseModel):
    """The whole set of certificates a connection decrypts its mail with."""

    model_config = ConfigDict(extra="forbid")

    certificate_ids: list[UUID] = Field(max_length=100)


class ReplayRequest(BaseModel):
    """Stored messages of the connection to announce again on ``mail.stored``."""

    model_config = ConfigDict(extra="forbid")

    since: UtcTime = Field(description="Stored at or after this time (UTC when no offset).")
    until: UtcTime | None = Field(None, description="Stored before this time (default: now).")


class ReplayQueued(BaseModel):
    messages: int = Field(description="`mail.stored` events queued, one per message.")
