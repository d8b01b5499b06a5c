"""Polls run through the real fetcher and store code on a real database, without a broker:
each poll's records go straight to the store's writer, in order. For tests of what becomes of
every message a poll asks for, against any server (the scripted quirk server, Dovecot, Cyrus).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.poll import Budget, Poll
from mailintake_fetcher.pop3_poll import Pop3Poll
from mailintake_fetcher.repository import FetcherRepository
from mailintake_shared.db.models import (
    FailedMessage,
    MailboxState,
    Message,
    MessageLog,
    PendingDownload,
)
from mailintake_shared.domain import AfterDownload, Encryption, Protocol, Transport
from mailintake_shared.events import PollResult
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.secretbox import SecretBox, generate_key
from mailintake_store.writer import StoreWriter
from tests.harness.polls import ListSink, poll_due
from tests.harness.views import LOOPBACK, connection_view

BUDGET = Budget(
    max_messages=500, max_bytes=10**9, max_seconds=60, batch_messages=50, chunk_bytes=64 * 1024
)


@dataclass
class LedgerRun:
    """One connection's polls. ``protocol`` is ``imap`` or ``pop3``; the server listens on
    ``port`` of 127.0.0.1 without TLS unless ``encryption`` says otherwise."""

    database_url: str
    port: int
    username: str
    password: str
    protocol: Protocol = Protocol.IMAP
    after: AfterDownload = AfterDownload.MARK_SEEN
    budget: Budget = BUDGET
    attempts: int = 3
    view_options: dict[str, Any] = field(default_factory=dict)
    connection_id: uuid.UUID = field(default_factory=uuid.uuid4)
    results: list[PollResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._engine = create_engine(self.database_url)
        self.sessions: sessionmaker[Session] = sessionmaker(self._engine, expire_on_commit=False)
        self.repository = FetcherRepository(self.sessions, SecretBox([generate_key()]))
        self.writer = StoreWriter(
            self.sessions, topic_prefix="ledger.", download_attempts=self.attempts
        )

    def config(self) -> MailboxConfig:
        options: dict[str, Any] = {
            "id": self.connection_id,
            "protocol": self.protocol,
            "transport": Transport.POP3 if self.protocol is Protocol.POP3 else Transport.IMAP,
            "encryption": Encryption.NONE,
            "port": self.port,
            "username": self.username,
            "after_download": self.after,
            "timeout_ms": 5000,
        }
        options.update(self.view_options)
        return MailboxConfig(
            view=connection_view(**options), password=SecretStr(self.password), network=LOOPBACK
        )

    def poll(self) -> PollResult:
        """One poll, its records written by the store as they would arrive on the partition."""
        kind: type[Poll] = Pop3Poll if self.protocol is Protocol.POP3 else ImapPoll
        sink = ListSink()
        result = kind(
            self.config(), poll_due(self.connection_id), self.repository, sink, self.budget
        ).run()
        self.writer.write([*sink.chunks, *sink.results])
        self.results.append(result)
        return result

    # --- what the database holds ----------------------------------------------------------
    def stored(self) -> dict[str, bytes]:
        """Stored messages by server id."""
        with self.sessions() as session:
            rows = session.execute(
                select(Message.server_id, Message.raw).where(
                    Message.connection_id == self.connection_id
                )
            ).all()
        return {row.server_id: bytes(row.raw) for row in rows}

    def stored_digests(self) -> list[str]:
        return sorted(hashlib.sha256(raw).hexdigest() for raw in self.stored().values())

    def queue(self) -> dict[str, str]:
        """The Incoming Mail Queue's failed entries: server id → reason."""
        with self.sessions() as session:
            rows = session.scalars(
                select(FailedMessage).where(FailedMessage.connection_id == self.connection_id)
            ).all()
        return {row.server_id: row.reason for row in rows}

    def pending(self) -> dict[str, int]:
        """Pending downloads: server id → attempts so far."""
        with self.sessions() as session:
            rows = session.scalars(
                select(PendingDownload).where(PendingDownload.connection_id == self.connection_id)
            ).all()
        return {row.server_id: row.attempts for row in rows}

    def cursor(self) -> int | None:
        with self.sessions() as session:
            state = session.get(MailboxState, (self.connection_id, "INBOX"))
            return state.last_uid if state else None

    def log_lines(self, outcome: str) -> list[str]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(MessageLog.detail).where(
                        MessageLog.connection_id == self.connection_id,
                        MessageLog.outcome == outcome,
                    )
                )
            )

    def problems(self) -> dict[str, str | None]:
        with self.sessions() as session:
            rows = session.execute(
                select(Message.server_id, Message.problems).where(
                    Message.connection_id == self.connection_id
                )
            ).all()
        return {row.server_id: row.problems for row in rows}

    def close(self) -> None:
        self._engine.dispose()


def digests(messages: list[bytes]) -> list[str]:
    return sorted(hashlib.sha256(raw).hexdigest() for raw in messages)
