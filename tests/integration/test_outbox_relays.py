"""Two relays of one outbox (the config API's and the store's) publish every record once, on
SQLite and on PostgreSQL, whatever the interleaving of their batches and the writers'.

The interleavings are made, not waited for: one relay is held between reading its batch and
deleting it while the other relay and the writers go on. The records are then read back from
the topic itself."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailintake_shared.db.engine import make_engine, make_session_factory, transaction
from mailintake_shared.db.models import OutboxRecord
from mailintake_shared.kafka import ReliableProducer, read_topic_to_end
from mailintake_shared.outbox import (
    SUBMITTED_BACKLOG,
    OutboxEntry,
    OutboxRelay,
    Prepared,
    add_many_to_outbox,
)
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.harness.announced import on_sqlite
from tests.harness.pipeline import wait_until

pytestmark = pytest.mark.integration

BATCH = 50


class HeldProducer(ReliableProducer):
    """A producer whose first delivery waits until the test lets it go: its relay has read
    its batch and not deleted it yet."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "held-relay")
        self.reached = threading.Event()
        self.release = threading.Event()

    def settle(self, futures: Any, timeout_s: float = 35.0) -> None:
        if not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(60)
        super().settle(futures, timeout_s)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path, settings: Settings) -> Settings:
    """The settings of a fresh database of each kind, at the latest schema."""
    if request.param == "postgresql":
        return settings
    return on_sqlite(settings, tmp_path / "outbox.db")


def _write(sessions: sessionmaker[Session], settings: Settings, first: int, count: int) -> None:
    entries = [
        OutboxEntry(Topic.POLL_COMPLETED, "key", str(n).encode())
        for n in range(first, first + count)
    ]
    with transaction(sessions) as session:
        add_many_to_outbox(session, settings.topic_prefix, entries)


def _published(settings: Settings) -> Counter[int]:
    return Counter(int(r.value) for r in read_topic_to_end(settings, Topic.POLL_COMPLETED))


def _relay(settings: Settings, producer: ReliableProducer, **options: Any) -> OutboxRelay:
    # Each relay with its own engine, as two processes would have.
    own = make_engine(settings)
    return OutboxRelay(make_session_factory(own), producer, inline_max_bytes=1024, **options)


@contextlib.contextmanager
def _stopped_relay(
    settings: Settings,
) -> Iterator[tuple[sessionmaker[Session], OutboxRelay, threading.Event]]:
    """The writer's sessions, a relay, and the stop a test sets before it runs the relay:
    what a service that stops hands its relay."""
    engine = make_engine(settings)
    producer = ReliableProducer(settings, "relay")
    try:
        yield make_session_factory(engine), _relay(settings, producer), threading.Event()
    finally:
        producer.close()
        engine.dispose()


def _write_prepared(
    sessions: sessionmaker[Session], settings: Settings, first: int
) -> list[Prepared]:
    """``_write`` a batch, returned as the store builds it in memory after its commit (for
    ``OutboxRelay.submit``). Found by its values: SQLite reuses the ids of deleted rows."""
    _write(sessions, settings, first, BATCH)
    with sessions() as session:
        rows = session.execute(
            select(OutboxRecord.id, OutboxRecord.topic, OutboxRecord.value).order_by(
                OutboxRecord.id
            )
        ).all()
    batch = range(first, first + BATCH)
    return [
        Prepared(r.id, r.topic, b"key", r.value, [], None) for r in rows if int(r.value) in batch
    ]


def _outbox_size(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(OutboxRecord)) or 0


def _assert_all_published_in_order(
    settings: Settings, sessions: sessionmaker[Session], count: int
) -> None:
    """Once the outbox is empty, the topic holds the records ``0 … count - 1`` once, in order."""
    wait_until(lambda: _outbox_size(sessions) == 0, timeout_s=60, message="the outbox emptied")
    values = [int(r.value) for r in read_topic_to_end(settings, Topic.POLL_COMPLETED)]
    assert values == list(range(count)), "lost, repeated or out of order"


@contextlib.contextmanager
def _relay_thread(relay: OutboxRelay) -> Iterator[None]:
    """``relay.run`` in a thread of its own, as the store runs it, with a long interval (only
    what is submitted, and a wake, make it publish); stopped, and ended, on leaving."""
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop, 600.0))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        relay.wake.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def _drain(relays: list[OutboxRelay], sessions: sessionmaker[Session]) -> None:
    for _ in range(20):
        for relay in relays:
            relay.flush()
        with sessions() as session:
            if not session.scalar(select(func.count()).select_from(OutboxRecord)):
                return
    raise AssertionError("the outbox never emptied")


def test_a_second_relay_neither_repeats_nor_deletes_what_the_first_holds(
    db_settings: Settings,
) -> None:
    settings = db_settings
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    held, free = HeldProducer(settings), ReliableProducer(settings, "free-relay")
    first, second = _relay(settings, held), _relay(settings, free)
    try:
        _write(sessions, settings, 0, BATCH)
        with ThreadPoolExecutor(1) as pool:
            holding: Future[int] = pool.submit(first.flush)
            assert held.reached.wait(30), "the first relay never read its batch"
            second.flush()  # meanwhile: it must not publish the held batch
            # Another batch while the held one is still in the table (the held relay must
            # not delete it with its own), then one more after the other relay ran again.
            _write(sessions, settings, BATCH, BATCH)
            second.flush()
            _write(sessions, settings, 2 * BATCH, BATCH)
            held.release.set()
            holding.result(timeout=60)
        _drain([first, second], sessions)
        published = _published(settings)
        assert_each_once(published, 3 * BATCH)
    finally:
        held.release.set()
        held.close()
        free.close()
        engine.dispose()


def test_a_row_committed_late_below_a_published_id_is_not_deleted_unpublished(
    settings: Settings,
) -> None:
    """PostgreSQL hands out ids when rows are written, not when they commit: a batch may see
    id 2 and not id 1 yet. Deleting up to the batch's last id would take id 1 unpublished."""
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    held = HeldProducer(settings)
    relay = _relay(settings, held)
    try:
        late = sessions()
        late.begin()
        add_many_to_outbox(
            late, settings.topic_prefix, [OutboxEntry(Topic.POLL_COMPLETED, "key", b"0")]
        )
        late.flush()  # id taken, not committed
        _write(sessions, settings, 1, BATCH)
        with ThreadPoolExecutor(1) as pool:
            holding = pool.submit(relay.flush)
            assert held.reached.wait(30)
            late.commit()  # committed while the relay holds its batch
            late.close()
            held.release.set()
            holding.result(timeout=60)
        _drain([relay], sessions)
        assert_each_once(_published(settings), BATCH + 1)
    finally:
        held.release.set()
        held.close()
        engine.dispose()


def assert_each_once(published: Counter[int], expected: int) -> None:
    lost = sorted(set(range(expected)) - set(published))
    repeated = sorted(n for n, times in published.items() if times > 1)
    assert (lost, repeated) == ([], []), f"lost {len(lost)}, published twice {len(repeated)}"


def test_records_a_relay_sent_after_the_commit_are_not_published_again_from_memory(
    db_settings: Settings,
) -> None:
    """The store publishes a batch's records from memory right after its commit; the relay,
    woken by its timer, may have sent the same rows in between."""
    settings = db_settings
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    producer = ReliableProducer(settings, "relay")
    relay = _relay(settings, producer)
    try:
        prepared = _write_prepared(sessions, settings, 0)
        assert relay.flush() == BATCH  # the timer's flush, between the commit and the call
        assert relay.publish_prepared(prepared)
        # and a batch the relay did not take first
        assert relay.publish_prepared(_write_prepared(sessions, settings, BATCH))
        assert_each_once(_published(settings), 2 * BATCH)
    finally:
        producer.close()
        engine.dispose()


def test_batches_handed_to_the_relay_thread_go_out_once_and_in_order(
    db_settings: Settings,
) -> None:
    """The store hands each committed batch to the relay's thread (``submit``) and goes on with
    the next. While the broker holds that thread, more batches come than it keeps in memory:
    once ``submit`` has waited its time, those are read back from their rows. Every record
    goes out once, in the order written."""
    settings = db_settings
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    held = HeldProducer(settings)
    relay = _relay(settings, held, submit_wait_s=0.1)

    def write_and_submit(first: int) -> None:
        relay.submit(_write_prepared(sessions, settings, first))

    batches = SUBMITTED_BACKLOG + 3
    try:
        with _relay_thread(relay):
            try:
                write_and_submit(0)
                assert held.reached.wait(30), "the submitted batch was never published"
                for n in range(1, batches):  # the thread is held: the backlog fills, overflows
                    write_and_submit(n * BATCH)
            finally:
                held.release.set()
            _assert_all_published_in_order(settings, sessions, batches * BATCH)
    finally:
        held.close()
        engine.dispose()


def test_what_was_submitted_when_the_service_stops_goes_out_before_the_relay_ends(
    settings: Settings,
) -> None:
    with _stopped_relay(settings) as (sessions, relay, stop):
        relay.submit(_write_prepared(sessions, settings, 0))
        stop.set()
        relay.run(stop, 600.0)  # returns at once: stopping, after what was submitted
        assert_each_once(_published(settings), BATCH)


def test_what_was_left_to_the_relay_pass_when_the_service_stops_goes_out_too(
    settings: Settings,
) -> None:
    """A batch handed over behind older rows (another writer's, a crash's) is left to the
    relay pass, which publishes in id order: stopping then runs that pass before the relay
    ends, rather than leaving the batch in the outbox until the next start."""
    with _stopped_relay(settings) as (sessions, relay, stop):
        _write(sessions, settings, 0, BATCH)  # not handed over: another writer's
        relay.submit(_write_prepared(sessions, settings, BATCH))
        stop.set()
        relay.run(stop, 600.0)
        assert _outbox_size(sessions) == 0, "left in the outbox until the next start"
        _assert_all_published_in_order(settings, sessions, 2 * BATCH)


def test_the_store_stays_at_most_two_batches_ahead_of_a_slow_broker(
    db_settings: Settings,
) -> None:
    """Every relay publishes in id order, so a record the config API writes while the store
    ingests goes out after the store's committed and unpublished records. However slow the
    broker, those stay within two batches: the one being published and the one written
    meanwhile (``submit`` waits for room), not a backlog that grows with the ingestion."""
    settings = db_settings
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    committed = threading.Semaphore(0)  # one per batch the writer committed
    unpublished: list[int] = []  # outbox rows at each publication, its own batch included

    class SlowProducer(ReliableProducer):
        """Each publication lets the writer commit up to two more batches first: a broker
        slower than the store (less when the writer waits for the relay)."""

        def settle(self, futures: Any, timeout_s: float = 35.0) -> None:
            for _ in range(2):
                committed.acquire(timeout=0.5)
            unpublished.append(_outbox_size(sessions))
            super().settle(futures, timeout_s)

    slow = SlowProducer(settings, "slow-relay")
    relay = _relay(settings, slow)
    batches = 6
    try:
        with _relay_thread(relay):
            for n in range(batches):
                prepared = _write_prepared(sessions, settings, n * BATCH)
                committed.release()
                relay.submit(prepared)
            _assert_all_published_in_order(settings, sessions, batches * BATCH)
        assert max(unpublished) <= 2 * BATCH, unpublished
    finally:
        slow.close()
        engine.dispose()
