"""Transactional outbox: events written with the change, published after the commit.

A ``mail.stored`` record is queued as the id of the message it announces (``value`` NULL,
``message_id`` set): the relay builds the event from the message row when it publishes it.
Every record's CloudEvents headers are made from its row when it is relayed, so a row
relayed again after a crash carries the same ones (``mailintake_shared.cloudevents``).

The store does not wait for the relay: right after its commit it hands the batch's records,
built in memory with the same bytes and headers the relay would build from the rows, to the
relay's thread (``OutboxRelay.submit``), and goes on with its next batch while that thread
publishes them (``publish_prepared``) and marks them sent. It never runs further ahead than
``SUBMITTED_BACKLOG`` batches: every relay publishes in id order, so a record another writer
adds (the config API's) waits behind whatever the store has committed and not published. The
relay publishes what that leaves: the records of a crash between the commit and the
acknowledgement, of a broker that was away, and the config API's.

Every service that writes the outbox also relays it (the config API and the store), so one
relay at a time publishes: PostgreSQL's advisory lock, or on SQLite a lock on a file beside
the database (``<database>.outbox-lock``). Without it two relays read the same rows and
publish them twice. A relay deletes exactly the rows it published: a row written after its
read — a lower id committed late on PostgreSQL, or an id SQLite reused after the table was
emptied — waits for the next batch instead of being deleted unpublished.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, delete, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_shared.cloudevents import Headers, relayed_headers, split_topic
from mailintake_shared.db.models import Message, OutboxRecord
from mailintake_shared.db.types import utcnow
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.metrics import OUTBOX_PUBLISHED
from mailintake_shared.stored_event import StoredRecord, load_mail_stored
from mailintake_shared.topics import Topic, topic_name

log = get_logger(__name__)

# One relay at a time across every replica (PostgreSQL), so that records of one key are
# published in the order they were written.
_RELAY_LOCK_ID = 0x6D61696C696E  # "mailin"
# Batches handed over by ``submit`` and not yet published. One is enough for the store's
# next write to overlap the publication of the last; more would let the store's committed
# and unpublished records grow, and with them the wait of every other writer's records.
SUBMITTED_BACKLOG = 1


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


class Prepared(NamedTuple):
    """A record just committed to the outbox (row ``outbox_id``), built in memory as the relay
    would build it from the row: published from memory right after the commit."""

    outbox_id: int
    topic: str
    key: bytes
    value: bytes
    headers: Headers
    message_id: int | None


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


class _Wake(threading.Event):
    """The relay thread's wake-up. ``set`` asks for a relay pass over the rows (what writers
    of the outbox call); ``kick`` only wakes the thread for records ``submit`` handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.pass_wanted = False

    def set(self) -> None:
        self.pass_wanted = True
        super().set()

    def kick(self) -> None:
        super().set()

    def take_pass_wanted(self) -> bool:
        wanted, self.pass_wanted = self.pass_wanted, False
        return wanted


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
        submit_wait_s: float | None = None,
    ) -> None:
        self._sessions = session_factory
        self._producer = producer
        self._inline_max = inline_max_bytes
        self._batch_size = batch_size
        self._send_timeout_s = send_timeout_s
        # How long ``submit`` waits for room (a publication may take ``send_timeout_s``).
        self._submit_wait_s = send_timeout_s if submit_wait_s is None else submit_wait_s
        self._lock = threading.Lock()
        self._submitted: queue.SimpleQueue[Sequence[Prepared]] = queue.SimpleQueue()
        self._room = threading.BoundedSemaphore(SUBMITTED_BACKLOG)  # released once published
        self.wake = _Wake()
        self.healthy = False  # the last attempt to reach the broker succeeded
        self.busy = False  # the last flush found another relay publishing

    def flush(self) -> int:
        """Publish everything pending; return how many records went out (0 as well when
        another relay holds the lock: ``busy`` then says so)."""
        total = 0
        while True:
            sent = self._flush_batch()
            self.busy = sent is None
            total += sent or 0
            if sent is None or sent < self._batch_size:
                return total

    @contextlib.contextmanager
    def _sole_relay(self) -> Iterator[Session | None]:
        """A transaction in which this relay alone publishes (in this process, and across
        processes: the SQLite file lock, PostgreSQL's advisory lock); None when another
        relay holds it."""
        with (
            self._lock,
            self._sessions() as session,
            _sqlite_file_lock(session) as sole,
            session.begin(),
        ):
            yield session if sole and _lock_relay(session) else None

    def _flush_batch(self) -> int | None:
        """One batch; None when another relay holds the lock."""
        with self._sole_relay() as session:
            if session is None:
                return None
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
            _mark_sent(session, [row.id for row in rows], [row.message_id for row in rows])
            OUTBOX_PUBLISHED.inc(len(rows))
            return len(rows)

    def publish_prepared(self, records: Sequence[Prepared]) -> bool:
        """Publish records the caller has just committed to the outbox, from memory, and mark
        them sent; False (the relay is woken to send them) when an older row still waits, when
        another relay holds the lock, or when the broker does not take them (then nothing is
        marked: the rows go out with the relay, never lost). A record whose row is gone was
        sent by a relay between the caller's commit and this call: it is not sent again."""
        if not records:
            return True
        try:
            with self._sole_relay() as session:
                if session is None:
                    return self._leave_to_relay()
                waiting = _present(session, [record.outbox_id for record in records])
                records = [record for record in records if record.outbox_id in waiting]
                if not records:
                    return True
                first = min(record.outbox_id for record in records)
                older = session.scalar(
                    select(OutboxRecord.id).where(OutboxRecord.id < first).limit(1)
                )
                if older is not None:  # the relay sends in id order: after the older ones
                    return self._leave_to_relay()
                futures = [self._producer.send(r.topic, r.key, r.value, r.headers) for r in records]
                self._producer.settle(futures, self._send_timeout_s)
                _mark_sent(
                    session,
                    [record.outbox_id for record in records],
                    [record.message_id for record in records],
                )
        except Exception as exc:
            log.warning("publishing after the commit failed; the relay sends", error=str(exc))
            return self._leave_to_relay()
        OUTBOX_PUBLISHED.inc(len(records))
        return True

    def _leave_to_relay(self) -> bool:
        self.wake.set()
        return False

    def _records(
        self, session: Session, rows: Sequence[Row[*tuple[Any, ...]]]
    ) -> Iterator[tuple[Row[*tuple[Any, ...]], bytes | None, Headers]]:
        """Each row with the record value and headers to publish: ``mail.stored`` events are
        built from their message rows (one query for the batch); a message deleted since is
        skipped."""
        wanted = [r.message_id for r in rows if r.value is None and r.message_id is not None]
        records: dict[int, StoredRecord] = {}
        if wanted:
            prefix = split_topic(rows[0].topic)[0]
            records = load_mail_stored(session, wanted, self._inline_max, prefix)
        for row in rows:
            if row.value is not None or row.message_id is None:
                yield row, row.value, _relayed_headers(row)
            elif (found := records.get(row.message_id)) is not None:
                yield row, found.value, found.headers
            else:
                log.warning("message deleted before its event was published", id=row.message_id)

    def submit(self, records: Sequence[Prepared]) -> None:
        """Hand records the caller has just committed to the outbox to the thread in ``run``,
        which publishes them from memory (``publish_prepared``) while the caller goes on.
        With ``SUBMITTED_BACKLOG`` batches not yet published, waits until one is (the broker
        sets the pace), at most ``submit_wait_s``; then leaves these to the relay pass, which
        reads them back from their rows."""
        if records:
            if self._room.acquire(timeout=self._submit_wait_s):
                self._submitted.put(records)
                self.wake.kick()
            else:
                self.wake.set()

    def _publish_submitted(self) -> int:
        """Publish what ``submit`` handed over, in order; return how many batches were left to
        the relay pass (their room is freed once it has run)."""
        left = 0
        while True:
            try:
                records = self._submitted.get_nowait()
            except queue.Empty:
                return left
            if self.publish_prepared(records):
                self._room.release()
            else:
                left += 1

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Publish until ``stop`` is set: what ``submit`` hands over as it comes, and a relay
        pass over the rows when ``wake`` is set, when something was left to it, and at least
        every ``interval_s`` (rows of a crash, of another writer). The records submitted when
        ``stop`` is set are published before it returns, with a last pass for those that
        were left to it."""
        last_pass = float("-inf")
        left = 0  # batches handed over and left to the pass: their room is held until it ran
        while True:
            self.wake.clear()
            wanted = self.wake.take_pass_wanted()
            stopping = stop.is_set()
            left += self._publish_submitted()
            due = not stopping and time.monotonic() - last_pass >= interval_s
            if wanted or due or left or self.busy:
                last_pass = time.monotonic()
                try:
                    self._producer.connect()
                    self.flush()
                    self.healthy = True
                except Exception as exc:
                    self.healthy = False
                    log.warning("outbox relay could not publish; will retry", error=str(exc))
                    stop.wait(min(interval_s * 5, 10))
            if stopping or not self.busy:  # the pass ran, not held off by another relay
                for _ in range(left):
                    self._room.release()
                left = 0
            if stopping:
                return
            # Another relay was publishing: try again soon, for what it has not taken.
            self.wake.wait(min(interval_s, 0.1) if self.busy else interval_s)


def _lock_relay(session: Session) -> bool:
    """One relay at a time on PostgreSQL (an advisory lock until the transaction ends; SQLite
    has the file lock, ``_sqlite_file_lock``)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    got = session.execute(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": _RELAY_LOCK_ID})
    return bool(got.scalar())


def _present(session: Session, ids: Sequence[int]) -> set[int]:
    """Which of the outbox rows ``ids`` are still there (not published yet)."""
    found: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(session.scalars(select(OutboxRecord.id).where(OutboxRecord.id.in_(chunk))))
    return found


def _mark_sent(session: Session, ids: Sequence[int], message_ids: Sequence[int | None]) -> None:
    """Delete exactly the outbox rows ``ids``, and mark the messages they announced published."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        session.execute(delete(OutboxRecord).where(OutboxRecord.id.in_(chunk)))
    announced = [message_id for message_id in message_ids if message_id is not None]
    for start in range(0, len(announced), 500):
        chunk = announced[start : start + 500]
        session.execute(update(Message).where(Message.id.in_(chunk)).values(published_at=utcnow()))


def _relayed_headers(row: Row[*tuple[Any, ...]]) -> Headers:
    """A record that is not its topic's event still goes out (without CloudEvents headers):
    the outbox never blocks on one row."""
    try:
        return relayed_headers(row.topic, row.key, row.value, row.created_at)
    except ValueError as exc:
        log.warning("outbox record is not its topic's event", topic=row.topic, error=str(exc))
        return []


@contextlib.contextmanager
def _sqlite_file_lock(session: Session) -> Iterator[bool]:
    """On a SQLite database file: whether this relay holds the lock beside it (held until the
    block ends, after the transaction's commit). Elsewhere: True (PostgreSQL locks inside
    the transaction; an in-memory database has one process)."""
    bind = session.get_bind()
    url = bind.engine.url if isinstance(bind, Connection) else bind.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield True
        return
    descriptor = os.open(f"{url.database}.outbox-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # released with the descriptor, also when the process dies
    finally:
        os.close(descriptor)
