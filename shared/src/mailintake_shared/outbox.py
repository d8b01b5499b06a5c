"""Transactional outbox: events written with the change, published by a relay afterwards.

A ``mail.stored`` record is queued as the id of the message it announces (``value`` NULL,
``message_id`` set): the relay builds the event from the message row when it publishes it.
Every record's CloudEvents headers are made from its row when it is relayed, so a row
relayed again after a crash carries the same ones (``mailintake_shared.cloudevents``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Row, delete, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_shared.cloudevents import Headers, headers, relayed_headers, split_topic
from mailintake_shared.db.models import Message, OutboxRecord
from mailintake_shared.db.types import utcnow
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.metrics import OUTBOX_PUBLISHED
from mailintake_shared.stored_event import load_mail_stored
from mailintake_shared.topics import Topic, topic_name

log = get_logger(__name__)

# One relay at a time across every replica (PostgreSQL), so that records of one key are
# published in the order they were written.
_RELAY_LOCK_ID = 0x6D61696C696E  # "mailin"


def add_to_outbox(
    session: Session, prefix: str, topic: Topic, key: str, value: bytes | None
) -> None:
    """Queue a record in the caller's transaction; ``value=None`` is a tombstone."""
    session.add(OutboxRecord(topic=topic_name(prefix, topic), key=key, value=value))


class OutboxEntry(NamedTuple):
    topic: Topic
    key: str
    value: bytes | None  # None: a tombstone, or a mail.stored record built when published
    message_id: int | None = None  # the stored message a mail.stored record announces


def announce_stored(message_id: int, connection_id: uuid.UUID) -> OutboxEntry:
    """The ``mail.stored`` record of a message, built from its row when it is published."""
    return OutboxEntry(Topic.MAIL_STORED, str(connection_id), None, message_id)


def add_many_to_outbox(session: Session, prefix: str, entries: list[OutboxEntry]) -> None:
    """Queue many records at once, in order (one multi-row INSERT rather than one per row)."""
    if entries:
        now = utcnow()
        session.execute(
            insert(OutboxRecord),
            [
                {
                    "topic": topic_name(prefix, entry.topic),
                    "key": entry.key,
                    "value": entry.value,
                    "created_at": now,
                    "message_id": entry.message_id,
                }
                for entry in entries
            ],
        )


class OutboxRelay:
    """Publishes outbox rows in id order and deletes them once the broker acknowledged; the
    messages they announce are marked published."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        producer: ReliableProducer,
        *,
        inline_max_bytes: int,
        batch_size: int = 1000,
        send_timeout_s: float = 30.0,
    ) -> None:
        self._sessions = session_factory
        self._producer = producer
        self._inline_max = inline_max_bytes
        self._batch_size = batch_size
        self._send_timeout_s = send_timeout_s
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.healthy = False  # the last attempt to reach the broker succeeded

    def flush(self) -> int:
        """Publish everything pending; return how many records went out."""
        total = 0
        while True:
            sent = self._flush_batch()
            total += sent
            if sent < self._batch_size:
                return total

    def _flush_batch(self) -> int:
        with self._lock, self._sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                got = session.execute(
                    text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": _RELAY_LOCK_ID}
                ).scalar()
                if not got:
                    return 0
            rows = session.execute(
                select(
                    OutboxRecord.id,
                    OutboxRecord.topic,
                    OutboxRecord.key,
                    OutboxRecord.value,
                    OutboxRecord.message_id,
                    OutboxRecord.created_at,
                )
                .order_by(OutboxRecord.id)
                .limit(self._batch_size)
            ).all()
            if not rows:
                return 0
            futures = [
                self._producer.send(row.topic, row.key.encode(), value, found)
                for row, value, found in self._records(session, rows)
            ]
            self._producer.settle(futures, self._send_timeout_s)
            session.execute(delete(OutboxRecord).where(OutboxRecord.id <= rows[-1].id))
            announced = [row.message_id for row in rows if row.message_id is not None]
            if announced:
                session.execute(
                    update(Message).where(Message.id.in_(announced)).values(published_at=utcnow())
                )
            OUTBOX_PUBLISHED.inc(len(rows))
            return len(rows)

    def _records(
        self, session: Session, rows: Sequence[Row[*tuple[Any, ...]]]
    ) -> Iterator[tuple[Row[*tuple[Any, ...]], bytes | None, Headers]]:
        """Each row with the record value and headers to publish: ``mail.stored`` events are
        built from their message rows (one query for the batch); a message deleted since is
        skipped."""
        wanted = [r.message_id for r in rows if r.value is None and r.message_id is not None]
        events = load_mail_stored(session, wanted, self._inline_max) if wanted else {}
        for row in rows:
            if row.value is not None or row.message_id is None:
                yield row, row.value, _relayed_headers(row)
            elif (found := events.get(row.message_id)) is not None:
                prefix = split_topic(row.topic)[0]
                yield row, found.event.to_bytes(), headers(found.event, prefix, replay=found.replay)
            else:
                log.warning("message deleted before its event was published", id=row.message_id)

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Publish until ``stop`` is set: at once when woken, else every ``interval_s``."""
        while not stop.is_set():
            try:
                self._producer.connect()
                self.flush()
                self.healthy = True
            except Exception as exc:
                self.healthy = False
                log.warning("outbox relay could not publish; will retry", error=str(exc))
                stop.wait(min(interval_s * 5, 10))
            self.wake.wait(interval_s)
            self.wake.clear()


def _relayed_headers(row: Row[*tuple[Any, ...]]) -> Headers:
    """A record that is not its topic's event still goes out (without CloudEvents headers):
    the outbox never blocks on one row."""
    try:
        return relayed_headers(row.topic, row.key, row.value, row.created_at)
    except ValueError as exc:
        log.warning("outbox record is not its topic's event", topic=row.topic, error=str(exc))
        return []
