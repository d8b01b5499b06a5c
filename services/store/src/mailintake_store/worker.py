"""The store's worker: mail.fetched → one transaction per batch → commit offsets.

Chain: ``CommitAfterWorkLoop`` → decode (bad records → dead-letter) → ``StoreWriter.write``
(one transaction) → dead-letter what the writer rejected → the batch's ``mail.stored`` and
``poll.completed`` handed to the outbox relay's thread, which publishes them from memory
while the next batch is written (and from the rows after a crash or a broker outage) →
offsets committed. A database outage makes the write raise: the loop
rewinds to the last commit and retries with back-off, losing nothing, and ``store.waiting``
says which connections' mail waits, and why (``waiting.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord

from mailintake_shared.checks import consumer_readiness
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.deadletter import dead_letter
from mailintake_shared.events import PollResult
from mailintake_shared.fetched import FetchedPart, decode_record
from mailintake_shared.kafka import (
    CommitAfterWorkLoop,
    ReliableProducer,
    ensure_topics,
    make_consumer,
)
from mailintake_shared.logging import get_logger
from mailintake_shared.outbox import OutboxRelay
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from mailintake_store.metrics import BATCH_SECONDS
from mailintake_store.waiting import WaitingReports
from mailintake_store.writer import StoreWriter

log = get_logger(__name__)
SERVICE = "store"


class StoreWorker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine = make_engine(settings)
        sessions = make_session_factory(self._engine)
        if settings.create_topics:
            ensure_topics(settings)
        self._producer = ReliableProducer(settings, SERVICE)
        self._consumer: KafkaConsumer = make_consumer(
            settings, SERVICE, [Topic.MAIL_FETCHED], max_partition_fetch_bytes=4 * 1024 * 1024
        )
        self._writer = StoreWriter(
            sessions,
            topic_prefix=settings.topic_prefix,
            secrets=SecretBox(settings.encryption_keys) if settings.encryption_keys else None,
            download_attempts=settings.download_attempts,
            inline_max_bytes=settings.inline_max_bytes,
        )
        self._relay = OutboxRelay(
            sessions, self._producer, inline_max_bytes=settings.inline_max_bytes
        )
        self._waiting = WaitingReports(self._producer, settings.topic_prefix)
        self._loop: CommitAfterWorkLoop | None = None

    def readiness(self) -> Mapping[str, bool]:
        return consumer_readiness(self._engine, self._consumer, self._loop)

    def run(self, stop: threading.Event) -> None:
        # The relay stops after the loop: a batch written as the stop came is still handed
        # over, and published before the store exits.
        relay_stop = threading.Event()
        relay = threading.Thread(target=self._relay.run, args=(relay_stop,), name="outbox-relay")
        relay.start()
        self._loop = CommitAfterWorkLoop(
            self._consumer,
            self.handle,
            stop=stop,
            max_records=self._settings.store_batch_records,
        )
        try:
            self._loop.run()
        finally:
            relay_stop.set()
            self._relay.wake.kick()
            relay.join(timeout=30)

    def handle(self, batch: list[ConsumerRecord]) -> None:
        started = time.monotonic()
        events: list[FetchedPart | PollResult] = []
        sources: list[ConsumerRecord] = []
        for record in batch:
            try:
                decoded = decode_record(record.value, record.headers, record.timestamp)
            except ValueError as exc:  # pydantic's ValidationError among them
                self._dead_letter(record, f"not a mail.fetched v1 record: {exc}")
                continue
            found = decoded if isinstance(decoded, list) else [decoded]
            events.extend(found)
            sources.extend([record] * len(found))
        try:
            outcome = self._writer.write(events)
        except Exception as exc:  # retried from the last commit: say why, where operators look
            self._waiting.failed(events, exc)
            raise
        self._waiting.written(events)
        for rejected in outcome.rejected:
            self._dead_letter(sources[rejected.index], rejected.reason)
        # Committed: its events go out from memory in the relay's thread while the next
        # batch is written (or with the relay pass, in order).
        self._relay.submit(outcome.prepared)
        BATCH_SECONDS.observe(time.monotonic() - started)
        if outcome.stale:
            log.warning("records of a fetcher that lost its lease dropped", records=outcome.stale)
        if outcome.stored or outcome.duplicates:
            log.info(
                "batch written",
                records=len(batch),
                stored=outcome.stored,
                duplicates=outcome.duplicates,
                rejected=len(outcome.rejected),
            )

    def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        dead_letter(self._producer, self._settings.topic_prefix, SERVICE, record, reason)

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()
        self._engine.dispose()


def build(settings: Settings) -> StoreWorker:
    return StoreWorker(settings)
