"""The scheduler's worker: folds its inputs into a ``Schedule`` and emits what is due.

Inputs, all keyed by connection id and co-partitioned: ``connections`` (compacted; read from
the start of every partition this replica is assigned), ``poll.completed`` and
``poll.requested``. Replicas share one consumer group, so each owns the connections of its
partitions and no connection is scheduled twice. Output: ``poll.due``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from mailintake_scheduler.metrics import CONNECTIONS, EMITTED, LATENESS, LATENESS_DUE, STALLED
from mailintake_scheduler.schedule import HealthChange, Schedule, ScheduleConfig
from mailintake_shared.checks import broker_ok
from mailintake_shared.cloudevents import headers
from mailintake_shared.deadletter import dead_letter
from mailintake_shared.events import (
    ConnectionHealthChanged,
    ConnectionState,
    PollCompleted,
    PollDue,
    PollRequested,
    decode,
)
from mailintake_shared.kafka import ReliableProducer, ensure_topics, make_consumer
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, record_key, topic_name

log = get_logger(__name__)
SERVICE = "scheduler"
_TICK_S = 0.2


def config_from(settings: Settings) -> ScheduleConfig:
    return ScheduleConfig(
        jitter_s=settings.poll_jitter_seconds,
        poll_timeout_s=settings.poll_timeout_seconds,
        retry_base_s=settings.retry_base_seconds,
        retry_max_s=settings.retry_max_seconds,
        stalled_after_s=settings.stalled_after_seconds,
    )


class _Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, read each connections partition from its start; on revocation, forget
    the connections of the partitions that went to another replica."""

    def __init__(self, worker: SchedulerWorker) -> None:
        self._worker = worker

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._worker.forget({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        connections = [tp for tp in assigned if tp.topic == self._worker.connections_topic]
        if connections:
            self._worker.consumer.seek_to_beginning(*connections)
        log.info("partitions assigned", partitions=sorted({tp.partition for tp in assigned}))


class SchedulerWorker:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        if settings.create_topics:
            ensure_topics(settings)
        self.connections_topic = topic_name(settings.topic_prefix, Topic.CONNECTIONS)
        self._due_topic = topic_name(settings.topic_prefix, Topic.POLL_DUE)
        self._health_topic = topic_name(settings.topic_prefix, Topic.CONNECTION_HEALTH)
        self._producer = ReliableProducer(settings, SERVICE)
        # Range assignment gives a replica the same partition numbers of every topic, so the
        # connections, completions and requests of one connection reach the same replica.
        self.consumer: KafkaConsumer = make_consumer(
            settings, SERVICE, [], partition_assignment_strategy=[RangePartitionAssignor]
        )
        self.consumer.subscribe(
            [
                self.connections_topic,
                topic_name(settings.topic_prefix, Topic.POLL_COMPLETED),
                topic_name(settings.topic_prefix, Topic.POLL_REQUESTED),
            ],
            listener=_Rebuild(self),
        )
        self.schedule = Schedule(config_from(settings))
        self._partition_of: dict[uuid.UUID, int] = {}
        self._healthy = True
        self._unsent: list[HealthChange] = []  # health changes whose publishing failed

    def readiness(self) -> Mapping[str, bool]:
        return {"broker": broker_ok(self.consumer), "emitting": self._healthy}

    def forget(self, partitions: set[int]) -> None:
        for connection_id, partition in list(self._partition_of.items()):
            if partition in partitions:
                self.schedule.connection_removed(connection_id)
                del self._partition_of[connection_id]

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            polled = self.consumer.poll(timeout_ms=int(_TICK_S * 1000), max_records=5000)
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for records in polled.values():
                for record in records:
                    self.apply(record)
                    tp = TopicPartition(record.topic, record.partition)
                    offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
            try:
                self.emit_due()
                self.emit_health()
                self._healthy = True
            except Exception:
                self._healthy = False
                log.exception("could not emit poll-due events; they stay due")
                stop.wait(1)
                continue
            if offsets:
                self._commit(offsets)
            CONNECTIONS.set(len(self.schedule))

    def apply(self, record: ConsumerRecord) -> None:
        now = self._clock()
        try:
            if record.topic == self.connections_topic:
                connection_id = uuid.UUID(record.key.decode())
                if record.value is None:
                    self.schedule.connection_removed(connection_id)
                    self._partition_of.pop(connection_id, None)
                    return
                view = decode(ConnectionState, record.value).connection
                self._partition_of[view.id] = record.partition
                self.schedule.connection_changed(view, now)
                if not view.enabled:
                    self._partition_of.pop(view.id, None)
            elif record.topic.endswith(Topic.POLL_COMPLETED.value):
                self.schedule.poll_completed(decode(PollCompleted, record.value or b""), now)
            else:
                request = decode(PollRequested, record.value or b"")
                if not self.schedule.poll_requested(
                    request.connection_id,
                    now,
                    request.reason,
                    after=request.after_poll_id,
                    resume=request.resume,
                ):
                    log.info(
                        "poll request waits for its connection's state (or it is parked)",
                        connection_id=str(request.connection_id),
                        reason=request.reason.value,
                    )
        except (ValidationError, ValueError, AttributeError) as exc:
            dead_letter(self._producer, self._settings.topic_prefix, SERVICE, record, str(exc))

    def emit_health(self) -> None:
        """The watchdog's findings, on the compacted ``connection.health`` topic. The schedule
        reports each change once: one that could not be published is published next time."""
        changes = self._unsent + self.schedule.health_changes(self._clock())
        self._unsent = []
        STALLED.set(self.schedule.stalled())
        if not changes:
            return
        wall = datetime.now(UTC)
        events = [
            ConnectionHealthChanged(
                connection_id=change.connection_id,
                state=change.state,
                reason=change.reason,
                last_success_at=None
                if change.since_success_s is None
                else wall - timedelta(seconds=change.since_success_s),
                at=wall,
            )
            for change in changes
        ]
        for event in events:
            log.warning(
                "connection health changed",
                connection_id=str(event.connection_id),
                state=event.state.value,
                reason=event.reason,
            )
        try:
            futures = [self._send(self._health_topic, e) for e in events]
            self._producer.settle(futures, timeout_s=30)
        except Exception:
            self._unsent = changes
            raise

    def emit_due(self) -> None:
        now = self._clock()
        events = self.schedule.due(now)
        if not events:
            return
        futures = [self._send(self._due_topic, e) for e in events]
        try:
            self._producer.settle(futures, timeout_s=30)
        except Exception:
            self.schedule.retract(events, self._clock())  # still due: emitted again next tick
            raise
        for reason, count in Counter(event.reason for event in events).items():
            EMITTED.labels(reason.value).inc(count)
        for late in self.schedule.lateness:
            LATENESS_DUE.observe(late + (self._clock() - now))
        LATENESS.observe(max(0.0, self._clock() - now))

    def _send(self, topic: str, event: PollDue | ConnectionHealthChanged) -> FutureRecordMetadata:
        return self._producer.send(
            topic,
            record_key(event.connection_id),
            event.to_bytes(),
            headers(event, self._settings.topic_prefix),
        )

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        try:
            self.consumer.commit(offsets)
        except Exception as exc:
            log.warning("offset commit failed; records will be read again", error=str(exc))

    def close(self) -> None:
        self.consumer.close()
        self._producer.close()


def build(settings: Settings) -> SchedulerWorker:
    return SchedulerWorker(settings)
