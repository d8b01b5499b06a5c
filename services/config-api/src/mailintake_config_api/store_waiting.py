"""What the store says it cannot write (topic ``store.waiting``), for connections' status.

The database may be what refuses the writes, so the store says it on Kafka, and this reads
the topic from its start and keeps the last word per connection (a tombstone clears it). A
report not renewed for ``STALE_AFTER`` is ignored: the store renews it at every retry.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from mailintake_shared.db.types import utcnow
from mailintake_shared.events import StoreWaiting, decode
from mailintake_shared.kafka import make_consumer
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name

log = get_logger(__name__)
STALE_AFTER = timedelta(minutes=10)


class StoreWaitingView:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._reports: dict[uuid.UUID, StoreWaiting] = {}
        self._lock = threading.Lock()

    def get(self, connection_id: uuid.UUID, now: datetime | None = None) -> StoreWaiting | None:
        """The store's current report on the connection's downloaded mail, if any."""
        with self._lock:
            report = self._reports.get(connection_id)
        if report is None or (now or utcnow()) - report.at > STALE_AFTER:
            return None
        return report

    def run(self, stop: threading.Event) -> None:
        """Follow the topic until ``stop``; reconnect after a broker outage."""
        consumer: KafkaConsumer | None = None
        while not stop.is_set():
            try:
                consumer = consumer or self._assigned()
                if consumer is None:  # the topic does not exist yet
                    stop.wait(5)
                    continue
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        self._fold(record.key, record.value)
            except Exception as exc:
                log.warning("reading store.waiting failed; will retry", error=str(exc))
                if consumer is not None:
                    consumer.close()
                consumer = None
                stop.wait(5)
        if consumer is not None:
            consumer.close()

    def _assigned(self) -> KafkaConsumer | None:
        name = topic_name(self._settings.topic_prefix, Topic.STORE_WAITING)
        consumer = make_consumer(self._settings, None, [])  # assigned, not in a group
        partitions = consumer.partitions_for_topic(name)
        if not partitions:
            consumer.close()
            return None
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def _fold(self, key: bytes | None, value: bytes | None) -> None:
        try:
            connection_id = uuid.UUID((key or b"").decode())
            report = decode(StoreWaiting, value) if value is not None else None
        except (ValueError, ValidationError) as exc:
            log.warning("store.waiting record skipped", error=str(exc)[:200])
            return
        with self._lock:
            if report is None:
                self._reports.pop(connection_id, None)
            else:
                self._reports[connection_id] = report
