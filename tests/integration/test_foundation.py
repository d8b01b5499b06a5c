"""Shared plumbing on real components: migrations on both databases, commit-after-work."""

from __future__ import annotations

import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import create_engine, text

from mailintake_shared.db.migrate import upgrade
from mailintake_shared.db.models import Base
from mailintake_shared.kafka import CommitAfterWorkLoop, make_consumer, make_producer
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name

pytestmark = pytest.mark.integration


def _schema_drift(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection, warnings.catch_warnings():
            # Expression indexes (lower(name)) cannot be reflected on SQLite, and SQLAlchemy
            # and Alembic say so; the test of SQLite looks for them by name instead.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
            diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    return [d for d in diffs if not (d[0] == "add_index" and d[1].name.startswith("uq_"))]


def test_migrations_build_the_models_schema_on_postgresql(database_url: str) -> None:
    assert _schema_drift(database_url) == []


def test_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = create_engine(url)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        upgrade(engine)
    upgrade(engine)  # running twice is a no-op
    with engine.connect() as connection:
        unique_names = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'uq_%'")
        ).scalars()
        assert set(unique_names) == {"uq_connections_name", "uq_oauth_credentials_name"}
    engine.dispose()
    assert [str(w.message) for w in warned] == []  # a fresh database migrates silently
    assert _schema_drift(url) == []


def _produce(settings: Settings, count: int) -> None:
    producer = make_producer(settings, "test")
    name = topic_name(settings.topic_prefix, Topic.POLL_DUE)
    for i in range(count):
        producer.send(name, key=b"same-key", value=str(i).encode())
    producer.flush()
    producer.close()


def _committed(settings: Settings, group: str) -> int:
    name = topic_name(settings.topic_prefix, Topic.POLL_DUE)
    probe = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.topic_prefix + group,
        enable_auto_commit=False,
    )
    try:
        total = 0
        for partition in probe.partitions_for_topic(name) or ():
            total += probe.committed(TopicPartition(name, partition)) or 0
        return total
    finally:
        probe.close()


def test_offsets_are_committed_only_after_the_work_and_failures_replay(
    settings: Settings,
) -> None:
    from mailintake_shared.kafka import ensure_topics

    ensure_topics(settings)
    _produce(settings, 20)
    group = f"g-{uuid.uuid4().hex[:6]}"
    seen: list[int] = []
    durable: list[int] = []
    failures = {"left": 1}
    stop = threading.Event()
    committed_during_work: list[int] = []

    def handle(batch: list[Any]) -> None:
        values = [int(r.value) for r in batch]
        seen.extend(values)
        committed_during_work.append(_committed(settings, group))
        if 7 in values and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("transient failure")
        durable.extend(values)
        if len(set(durable)) == 20:
            stop.set()

    consumer = make_consumer(settings, group, [Topic.POLL_DUE], max_poll_interval_ms=3000)
    loop = CommitAfterWorkLoop(
        consumer, handle, stop=stop, max_records=5, retry_backoff_s=(0.1, 0.2)
    )
    runner = threading.Thread(target=loop.run)
    runner.start()
    runner.join(timeout=120)
    stop.set()
    runner.join()
    consumer.close()

    assert sorted(set(durable)) == list(range(20))
    assert seen.count(7) == 2  # the failed batch was delivered again
    assert durable == sorted(durable)  # and in order: nothing skipped past the failure
    assert _committed(settings, group) == 20
    # While a batch was being handled, its own offsets were never committed yet.
    assert all(c <= v for c, v in zip(committed_during_work, _batch_starts(seen), strict=True))


def _batch_starts(seen: list[int]) -> list[int]:
    # Batches are 5 records of one partition, in order: each starts at a multiple of 5.
    return [v for i, v in enumerate(seen) if i % 5 == 0]


def test_a_topic_is_read_to_its_end_without_trusting_listoffsets(
    settings: Settings, broker: Any
) -> None:
    """The local broker answers ListOffsets with the last batch's first offset + 1 when a
    batch holds several records (README, the local broker): the reader does not use it."""
    from mailintake_devstack.broker import LocalBroker
    from mailintake_shared.kafka import ensure_topics, read_topic_to_end

    ensure_topics(settings)
    name = topic_name(settings.topic_prefix, Topic.POLL_DUE)
    producer = make_producer(settings, "test")
    for batch in range(5):  # five batches of 100 records on one partition
        for i in range(100):
            producer.send(name, key=b"same-key", value=str(batch * 100 + i).encode())
        producer.flush()
    producer.close()

    records = read_topic_to_end(settings, Topic.POLL_DUE)
    assert [int(r.value) for r in records] == list(range(500))
    if isinstance(broker, LocalBroker):
        probe = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        tp = TopicPartition(name, records[0].partition)
        try:
            assert probe.end_offsets([tp])[tp] < 500  # the trap: ListOffsets is too low
        finally:
            probe.close()
