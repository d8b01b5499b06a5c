"""The tables. Migrations (``mailintake_shared/db/migrations``) create them; keep both in step."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailintake_shared.db.types import BigIntId, UTCDateTime, utcnow


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("uq_oauth_credentials_name", func.lower(name), unique=True),)


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
    enabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("uq_connections_name", func.lower(name), unique=True),)


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
