"""A store stopped (SIGTERM) in the middle of a batch publishes that batch's events before it
exits: the batch is committed, its offsets too, so nothing would write it again; its events
must not wait in the outbox for the next start. Real Dovecot, PostgreSQL and broker; the
store in this process, so that the stop request lands inside a write."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from mailintake_fetcher.publisher import KafkaSink
from mailintake_fetcher.worker import FetcherWorker
from mailintake_shared.kafka import ReliableProducer, read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from mailintake_store.worker import StoreWorker
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database
from tests.harness.polls import poll_due
from tests.integration.conftest import create_enabled

pytestmark = pytest.mark.integration

MESSAGES = 20


class StoppedMidBatch(StoreWorker):
    """A store whose stop is requested while it handles its first batch, after its relay's
    thread has had the time to notice (its timer wakes it every second)."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        super().__init__(settings)
        self._stop = stop

    def handle(self, batch: list[ConsumerRecord]) -> None:
        if not self._stop.is_set():
            self._stop.set()  # SIGTERM, in the middle of the batch
            for thread in threading.enumerate():
                if thread.name == "outbox-relay":
                    thread.join(timeout=3)  # it ends, or goes on until the store is done
        super().handle(batch)


def test_the_batch_written_while_stopping_is_published_before_the_store_exits(
    pipeline_settings: Settings, mailbox: Mailbox, db: Database
) -> None:
    settings = pipeline_settings
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(MESSAGES)))
    with api_client(settings) as api:  # the API's own relay stops with it
        connection_id = create_enabled(api, mailbox)
    fetcher, producer = FetcherWorker(settings), ReliableProducer(settings, "fetched")
    try:
        sink = KafkaSink(producer, settings.topic_prefix)
        fetcher.poll(poll_due(uuid.UUID(connection_id)), sink)
        sink.flush()
    finally:
        fetcher.close()
        producer.close()

    stop = threading.Event()
    store = StoppedMidBatch(settings, stop)
    try:
        store.run(stop)
    finally:
        store.close()

    assert db.message_count() == MESSAGES
    assert db.scalar("SELECT count(*) FROM outbox") == 0, "events left for the next start"
    records = read_topic_to_end(settings, Topic.MAIL_STORED)
    announced = Counter(json.loads(record.value)["message_id"] for record in records)
    stored = {int(row.id) for row in db.rows("SELECT id FROM messages")}
    assert set(announced) == stored
    assert max(announced.values()) == 1
