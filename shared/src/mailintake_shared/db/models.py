"""The tables. Migrations (``mailintake_shared/db/migrations``) create them; keep both in step."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailintake_shared.db.types import BigIntId, UTCDateTime, utcnow
from mailintake_shared.domain import (
    AfterDownload,
    ConnectionView,
    Encryption,
    FirstSync,
    Protocol,
    PushMode,
    Transport,
    effective_folder,
    effective_host,
    effective_port,
)


class Base(DeclarativeBase):
    pass


class OAuthCredential(Base):
    """An OAuth2 client registration (client id and secret) that connections refer to."""

    __tablename__ = "oauth_credentials"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[str] = mapped_column(String(512))
    client_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    tenant: Mapped[str | None] = mapped_column(String(255))
    # Microsoft Graph with application permissions (client credentials): no sign-in.
    app_only: Mapped[bool] = mapped_column(default=False)
    # Space-separated; null: the provider's defaults for the connection's transport.
    scopes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("uq_oauth_credentials_name", func.lower(name), unique=True),)


class OAuthGrant(Base):
    """What an authorization gave a connection: its tokens (encrypted) and whether they still
    work. The row is also the per-connection lock that serialises refreshes across workers."""

    __tablename__ = "oauth_grants"

    connection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    refresh_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(32))  # authorized, authorization_required
    error: Mapped[str | None] = mapped_column(Text)
    authorized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OAuthFlow(Base):
    """An authorization under way: the state in the provider's URL, bound to one connection,
    single-use and short-lived, with the PKCE verifier (encrypted)."""

    __tablename__ = "oauth_flows"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("connections.id", ondelete="CASCADE")
    )
    flow_enc: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Connection(Base):
    """An incoming mail connection: where to fetch from, how, and what to do after."""

    __tablename__ = "connections"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    version: Mapped[int] = mapped_column(default=1)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    protocol: Mapped[str] = mapped_column(String(32))
    transport: Mapped[str] = mapped_column(String(16))
    oauth_credential_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("oauth_credentials.id", ondelete="RESTRICT")
    )
    encryption: Mapped[str] = mapped_column(String(16))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None]
    tls_verify: Mapped[bool] = mapped_column(default=True)
    tls_ca_pem: Mapped[str | None] = mapped_column(Text)
    interval_minutes: Mapped[int]
    timeout_ms: Mapped[int]
    folder: Mapped[str | None] = mapped_column(String(1024))
    username: Mapped[str] = mapped_column(String(512))
    shared_mailbox: Mapped[str | None] = mapped_column(String(512))
    password_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    after_download: Mapped[str] = mapped_column(String(16))
    first_sync: Mapped[str] = mapped_column(String(16), default=FirstSync.ALL.value)
    first_sync_since: Mapped[date | None] = mapped_column(Date)
    push: Mapped[str] = mapped_column(String(8), default=PushMode.AUTO.value)
    enabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("uq_connections_name", func.lower(name), unique=True),)

    def view(self) -> ConnectionView:
        """The connection without its secrets, defaults applied."""
        protocol, transport = Protocol(self.protocol), Transport(self.transport)
        encryption = Encryption(self.encryption)
        return ConnectionView(
            id=self.id,
            version=self.version,
            name=self.name,
            description=self.description,
            protocol=protocol,
            transport=transport,
            oauth_credential_id=self.oauth_credential_id,
            encryption=encryption,
            host=effective_host(protocol, transport, self.host),
            port=effective_port(transport, encryption, self.port),
            tls_verify=self.tls_verify,
            tls_ca_pem=self.tls_ca_pem,
            interval_minutes=self.interval_minutes,
            timeout_ms=self.timeout_ms,
            folder=effective_folder(transport, self.folder),
            username=self.username,
            shared_mailbox=self.shared_mailbox,
            after_download=AfterDownload(self.after_download),
            first_sync=FirstSync(self.first_sync),
            first_sync_since=self.first_sync_since,
            push=PushMode(self.push),
            enabled=self.enabled,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class OutboxRecord(Base):
    """A Kafka record written in the same transaction as the change it announces.

    The relay publishes rows in id order and deletes them once the broker acknowledged
    them, so a crash between the database commit and the publish loses no event.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The stored message a mail.stored record announces: set as published when it goes out.
    message_id: Mapped[int | None] = mapped_column(BigInteger)


class ConnectionStatus(Base):
    """Each connection's polling health, written by the store as poll results arrive."""

    __tablename__ = "connection_status"

    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error_kind: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    messages_stored: Mapped[int] = mapped_column(BigInteger, default=0)


class MailboxState(Base):
    """The cursor of one folder: its UIDVALIDITY and the highest UID committed.

    ``baseline_uid``: the highest UID when the first poll ran with a first-sync mode other
    than ``all``; messages up to it are taken only if the mode selects them.
    """

    __tablename__ = "mailbox_state"

    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    folder: Mapped[str] = mapped_column(String(1024), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    baseline_uid: Mapped[int | None] = mapped_column(BigInteger)
    delta_link: Mapped[str | None] = mapped_column(Text)  # Microsoft Graph's cursor
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Certificate(Base):
    """An S/MIME certificate with its private key (encrypted by the secret box)."""

    __tablename__ = "certificates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    alias: Mapped[str | None] = mapped_column(String(255))
    certificate_pem: Mapped[str] = mapped_column(Text)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(64))  # hexadecimal
    private_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("fingerprint_sha256", name="uq_certificates_fingerprint"),)


class ConnectionCertificate(Base):
    """Which certificates a connection decrypts its mail with (many to many)."""

    __tablename__ = "connection_certificates"

    connection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    certificate_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("certificates.id", ondelete="RESTRICT"), primary_key=True, index=True
    )


class Message(Base):
    """A stored message: raw MIME, identity on the server, header summary, server action."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # No foreign key: stored mail outlives the connection it came from.
    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    folder: Mapped[str] = mapped_column(String(1024))
    server_id: Mapped[str] = mapped_column(String(512))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    internal_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seen_before: Mapped[bool] = mapped_column(default=False)
    poll_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    header_from: Mapped[str | None] = mapped_column(Text)
    header_to: Mapped[str | None] = mapped_column(Text)
    header_cc: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    header_date: Mapped[str | None] = mapped_column(Text)
    message_id_header: Mapped[str | None] = mapped_column(Text)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    problems: Mapped[str | None] = mapped_column(Text)  # JSON list; null when parsed cleanly
    # S/MIME: the message with the layers its connection's certificates opened removed
    # (null when none was), and what was found (JSON of events.SmimeInfo).
    unwrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    smime: Mapped[str | None] = mapped_column(Text)
    # Encrypted and not opened (no certificate matched, or it expired …): in the queue until
    # an administrator adds the certificate and retries.
    smime_unopened: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The server action after download (\\Seen or delete): "pending" until applied on the
    # server, then "applied"; "stale" when a UIDVALIDITY change made the UID meaningless.
    action_state: Mapped[str] = mapped_column(String(16))
    action_applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("connection_id", "folder", "server_id", name="uq_messages_server_id"),
        Index("ix_messages_sha256", "connection_id", "sha256"),
        Index("ix_messages_action", "connection_id", "folder", "action_state"),
        # No index on published_at: marking a message published stays a HOT update (the
        # table keeps a fifth of each page free for it, fillfactor 80).
    )


class MessageChunk(Base):
    """A chunk of a large message waiting for its siblings (staging, deleted once whole)."""

    __tablename__ = "message_chunks"

    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    folder: Mapped[str] = mapped_column(String(1024), primary_key=True)
    server_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PollLog(Base):
    """One row per poll: when, how it ended, what it downloaded and stored."""

    __tablename__ = "poll_log"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    poll_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    reason: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    fetched: Mapped[int] = mapped_column(default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stored: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)  # kept in the Incoming Mail Queue
    more_pending: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_poll_log_started_at", "started_at"),)


class MessageLog(Base):
    """The Incoming Mail Log per message: one row for each message record the store received
    (stored, duplicate skipped or rejected); publishing and the server action are on the
    message row."""

    __tablename__ = "message_log"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    poll_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    folder: Mapped[str] = mapped_column(String(1024))
    server_id: Mapped[str] = mapped_column(String(512))
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))  # stored, duplicate, rejected
    detail: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    downloaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_message_log_connection", "connection_id", "logged_at"),
        Index("ix_message_log_logged_at", "logged_at"),
    )


class FailedMessage(Base):
    """A downloaded message the store could not take (its chunks did not add up, say): in the
    Incoming Mail Queue until an administrator retries or deletes it. The bytes received are
    kept when there are any."""

    __tablename__ = "failed_messages"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    poll_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    folder: Mapped[str] = mapped_column(String(1024))
    server_id: Mapped[str] = mapped_column(String(512))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Deleted from the queue by an administrator: kept (so that POP3 does not download it
    # again) until the queue's retention purges it.
    dismissed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("connection_id", "folder", "server_id", name="uq_failed_messages_key"),
        Index("ix_failed_messages_failed_at", "failed_at"),
    )


class PendingDownload(Base):
    """A message a poll asked for that the server holds but did not deliver (``BODY[] NIL``, no
    answer, ``-ERR`` to RETR, a session that broke during it): tried again by the next polls.
    After ``MAILINTAKE_DOWNLOAD_ATTEMPTS`` polls in a row it moves to the Incoming Mail Queue
    (``failed_messages``) with the server's words, and the row goes."""

    __tablename__ = "pending_downloads"

    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    folder: Mapped[str] = mapped_column(String(1024), primary_key=True)
    server_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str] = mapped_column(Text)  # the server's words, last attempt
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_poll_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class PollLease(Base):
    """Who may poll a connection now: one owner at a time, with a fencing token that grows
    with every new owner. A fetcher whose lease is gone (paused, partitioned) cannot apply
    server actions, and the store refuses its records."""

    __tablename__ = "poll_leases"

    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(255))  # "": given back
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Records of a lease below this token were a taken-over fetcher's: the store drops them.
    fence: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class AuditEntry(Base):
    """One configuration change (or attempt) through the config API: who, what, when — the
    names of the fields it sent, never their values."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))  # role:token-fingerprint
    client: Mapped[str | None] = mapped_column(String(64))  # the caller's address
    action: Mapped[str] = mapped_column(String(255))  # "POST /connections/{connection_id}/enable"
    target: Mapped[str | None] = mapped_column(Text)  # JSON: the path's parameters
    fields: Mapped[str | None] = mapped_column(Text)  # JSON: the body's top-level field names
    status: Mapped[int]

    __table_args__ = (Index("ix_audit_log_at", "at"),)


class ConnectionWatch(Base):
    """Whether a connection is watched for new mail (IMAP IDLE, Graph change notifications),
    written by the watcher that owns it: its state, since when, and why not. ``confirmed_at``
    is renewed every ``MAILINTAKE_WATCH_HEARTBEAT_SECONDS``: a row not confirmed for three
    times that long belongs to a watcher that stopped."""

    __tablename__ = "connection_watches"

    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # see mailintake_shared.watch.WatchState
    method: Mapped[str | None] = mapped_column(String(16))  # imap_idle, graph
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(String(255))
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class GraphSubscription(Base):
    """A Microsoft Graph change-notification subscription of a connection's folder. The
    ``clientState`` Graph sends back with each notification is kept as its SHA-256 only.
    ``needs`` is set by the config API when a lifecycle notification asks for an action
    (``reauthorize``, ``recreate``); the watcher does it and clears it."""

    __tablename__ = "graph_subscriptions"

    subscription_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    client_state_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    needs: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
