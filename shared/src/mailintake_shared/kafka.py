"""Kafka plumbing on kafka-python: producer, topic creation, commit-after-work consumption."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata

from mailintake_shared.settings import Settings
from mailintake_shared.topics import TOPIC_SPECS, Topic, topic_name

log = structlog.get_logger(__name__)


class KeyHashCachingPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """kafka-python's default partitioner — a keyed record goes to partition ``murmur2(key)
    & 0x7fffffff`` modulo the topic's partition count, as the Java client does — with each
    key's hash remembered. kafka-python computes murmur2 in pure Python (about 10 µs a
    record); the pipeline's keys are connection ids, few and repeated, which the scheduler
    and the store hashed again for every record. Records without a key go to the default."""

    def __init__(self, remembered: int = 1 << 15) -> None:
        self._hash = functools.lru_cache(maxsize=remembered)(murmur2)

    def partition(
        self,
        topic: str,
        key: object,
        serialized_key: bytes | None,
        value: object,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None or topic not in cluster.topics():
            return int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        partitions = sorted(cluster.partitions_for_topic(topic))
        return int(partitions[(self._hash(serialized_key) & 0x7FFFFFFF) % len(partitions)])


def make_producer(settings: Settings, client_name: str, **overrides: Any) -> KafkaProducer:
    """A producer that waits for every in-sync replica (acks=all) and is idempotent."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{client_name}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 262_144,
        "retries": 2**31 - 1,
        # Fail a delivery after 30 s rather than minutes: the caller then retries from its
        # last commit with a fresh producer, which also heals a broker that lost its state.
        "request_timeout_ms": 15_000,
        "delivery_timeout_ms": 30_000,
        "metadata_max_age_ms": settings.kafka_metadata_max_age_ms,
        "partitioner": KeyHashCachingPartitioner(),
        # kafka-python's own sensors, updated on every record, are read by nothing: the
        # services export their own Prometheus metrics.
        "metrics_enabled": False,
    }
    config.update(overrides)
    return KafkaProducer(**config)


class ReliableProducer:
    """A producer that is rebuilt after a failed delivery.

    A broker that lost its state (a restart of memory storage, a cluster rebuilt after a
    disaster) no longer knows an idempotent producer's id, and the old producer then fails
    for ever; a new one starts clean. Building it also creates missing topics with their
    configs first, so that they are not auto-created with the broker's defaults.
    """

    def __init__(self, settings: Settings, client_name: str, **overrides: Any) -> None:
        self._settings = settings
        self._client_name = client_name
        self._overrides = overrides
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                if self._settings.create_topics:
                    ensure_topics(self._settings)
                self._producer = make_producer(self._settings, self._client_name, **self._overrides)
            return self._producer

    def connect(self) -> None:
        self._get()

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> FutureRecordMetadata:
        return self._get().send(topic, key=key, value=value, headers=headers)

    def settle(self, futures: Iterable[FutureRecordMetadata], timeout_s: float = 35.0) -> None:
        """Wait until every future is acknowledged; on any failure rebuild, then raise."""
        try:
            self._get().flush(timeout=timeout_s)
            for future in futures:
                future.get(timeout=timeout_s)
        except Exception:
            self.reset()
            raise

    def reset(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=0)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=timeout_s)


def make_consumer(
    settings: Settings, group_id: str | None, topics: Iterable[Topic], **overrides: Any
) -> KafkaConsumer:
    """A consumer whose offsets are committed only by the code, after durable work.

    The group id is prefixed like the topics (``mailintake.fetcher``), so that two
    deployments sharing a Kafka cluster never share a consumer group.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{group_id or 'reader'}",
        "group_id": f"{settings.topic_prefix}{group_id}" if group_id else None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(500, settings.kafka_session_timeout_ms // 3),
        # A subscribed topic that disappeared and came back (a broker restarted empty) is
        # assigned again at the next metadata refresh: minutes with the default.
        "metadata_max_age_ms": settings.kafka_metadata_max_age_ms,
        "metrics_enabled": False,  # as for the producer
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    names = [topic_name(settings.topic_prefix, t) for t in topics]
    if names:
        consumer.subscribe(names)
    return consumer


def ensure_topics(settings: Settings) -> list[str]:
    """Create every missing topic with its configs; return the names created."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-admin",
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                topic_name(settings.topic_prefix, spec.topic),
                settings.topic_partitions,
                settings.topic_replication_factor,
                topic_configs=spec.configs(),
            )
            for spec in TOPIC_SPECS
            if topic_name(settings.topic_prefix, spec.topic) not in existing
        ]
        created = []
        for new_topic in missing:
            try:
                admin.create_topics([new_topic])
                created.append(new_topic.name)
            except TopicAlreadyExistsError:
                pass  # another service created it in the meantime
        if created:
            log.info("topics created", topics=created)
        return created
    finally:
        admin.close()


def read_topic_to_end(
    settings: Settings, topic: Topic, *, timeout_s: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the start to the current end, in partition order."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-reader",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        name = topic_name(settings.topic_prefix, topic)
        partitions = consumer.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = end_offsets(consumer, tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {name} to its end in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def end_offsets(
    consumer: KafkaConsumer, tps: list[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """Offsets one past the last record of each assigned partition (which must have a
    position), from the high watermark that fetch answers carry. Never from ListOffsets
    (``consumer.end_offsets``): the local broker (Tansu) answers it with the last batch's
    first offset + 1 when a batch holds several records. Raises ``TimeoutError`` when a
    partition's watermark is still unknown after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(consumer.highwater(tp) is None for tp in tps):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no fetch answered for {tps} in {timeout_s}s")
        consumer.poll(timeout_ms=100, max_records=1, update_offsets=False)
    return {tp: int(consumer.highwater(tp)) for tp in tps}


BatchHandler = Callable[[list[ConsumerRecord]], None]


class CommitAfterWorkLoop:
    """poll → ``handle(batch)`` → commit offsets: an offset is committed only after the
    handler returned, i.e. after its work is durable. A handler that raises leaves the
    offsets where they were; the loop rewinds and retries the batch after a back-off
    (transient failure). Bad records are the handler's to dead-letter, not to raise.
    """

    def __init__(
        self,
        consumer: KafkaConsumer,
        handle: BatchHandler,
        *,
        stop: threading.Event,
        max_records: int = 500,
        poll_timeout_ms: int = 500,
        retry_backoff_s: tuple[float, float] = (0.5, 30.0),
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._handle = handle
        self._stop = stop
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff_min, self._backoff_max = retry_backoff_s
        self._on_idle = on_idle
        self._assigned: set[TopicPartition] = set()
        self.healthy = True

    def run(self) -> None:
        backoff = self._backoff_min
        while not self._stop.is_set():
            try:
                polled = self._consumer.poll(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
            except KafkaError as exc:
                log.warning("polling the broker failed; retrying", error=str(exc))
                self._stop.wait(backoff)
                continue
            batch = [record for records in polled.values() for record in records]
            if self._stop.is_set():
                break  # uncommitted: the partition's next owner handles the batch
            self._watch_assignment()
            if not batch:
                if self._on_idle is not None:
                    self._on_idle()
                continue
            try:
                self._handle(batch)
            except Exception:
                self.healthy = False
                log.exception("batch failed; will retry from the last commit", size=len(batch))
                self._rewind(batch)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            self.healthy = True
            backoff = self._backoff_min
            self._commit(batch)

    def _watch_assignment(self) -> None:
        """Log the partitions this member holds whenever they change (rebalances)."""
        assigned = set(self._consumer.assignment())
        if assigned != self._assigned:
            self._assigned = assigned
            names = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
            log.info("partitions assigned", partitions=names)

    def _rewind(self, batch: list[ConsumerRecord]) -> None:
        first: dict[TopicPartition, int] = {}
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        for tp, offset in first.items():
            # A partition revoked meanwhile is replayed by its new owner from the commit.
            with contextlib.suppress(AssertionError, KafkaError):
                self._consumer.seek(tp, offset)

    def _commit(self, batch: list[ConsumerRecord]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            current = offsets.get(tp)
            if current is None or record.offset + 1 > current.offset:
                offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance (in progress or done) or a broker outage: the partition's owner
            # replays from the last commit, and every handler is idempotent, so a replay
            # stores nothing twice.
            log.warning("offset commit failed; records will be replayed", error=str(exc))
