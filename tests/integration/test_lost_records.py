"""Records a poll published that never reach the store (a broker that lost acknowledged data):
the store notices by counting the poll's records against its result, leaves the cursor where
the poll started, and the next poll downloads what is missing — on real Dovecot and
PostgreSQL. A later poll that continued from the first one's ledger does not move the cursor
past that gap either."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from mailintake_fetcher.worker import FetcherWorker
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.settings import Settings
from mailintake_store.writer import StoreWriter
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database
from tests.harness.polls import ListSink, poll_due
from tests.integration.conftest import create_enabled

pytestmark = pytest.mark.integration


@pytest.fixture
def writer(settings: Settings) -> Iterator[StoreWriter]:
    engine = make_engine(settings)
    yield StoreWriter(make_session_factory(engine), topic_prefix=settings.topic_prefix)
    engine.dispose()


def _poll(worker: FetcherWorker, connection_id: str) -> ListSink:
    due = poll_due(uuid.UUID(connection_id))
    sink = ListSink()
    worker.poll(due, sink)
    return sink


def test_a_poll_whose_records_went_missing_is_downloaded_again(
    settings: Settings, api: TestClient, mailbox: Mailbox, db: Database, writer: StoreWriter
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(10)))
    cid = create_enabled(api, mailbox)
    worker = FetcherWorker(settings)
    try:
        first = _poll(worker, cid)
        (result,) = first.results
        assert (result.messages, result.cursor_from, result.cursor_to) == (10, 0, 10)
        # UIDs 3 and 4 are lost on the way; 1, 2 and 5-10 and the result arrive.
        arrived = [p for p in first.chunks if p.chunk.uid not in (3, 4)]
        writer.write([*arrived, result])
        assert db.message_count() == 8
        assert (db.scalar("SELECT last_uid FROM mailbox_state") or 0) == 0  # where it started
        completed = db.scalar(
            "SELECT value FROM outbox WHERE topic LIKE '%poll.completed' ORDER BY id DESC"
        )
        assert json.loads(bytes(completed))["more_pending"] is True  # the next poll at once
        # A poll that had gone on from the lost one's ledger (UID 10) moves nothing either.
        later = result.model_copy(
            update={"poll_id": uuid.uuid4(), "messages": 0, "cursor_from": 10, "cursor_to": 12}
        )
        writer.write([later])
        assert (db.scalar("SELECT last_uid FROM mailbox_state") or 0) == 0

        second = _poll(worker, cid)
        assert second.results[0].messages == 10  # from UID 1 again
        writer.write([*second.chunks, *second.results])
        assert db.message_count() == db.distinct_messages() == 10
        assert db.scalar("SELECT last_uid FROM mailbox_state") == 10
        third = _poll(worker, cid)
        assert third.results[0].messages == 0  # caught up
    finally:
        worker.close()


def test_the_stored_counter_counts_each_message_once_in_a_batch_of_several_polls(
    settings: Settings, api: TestClient, mailbox: Mailbox, db: Database, writer: StoreWriter
) -> None:
    """A batch that holds two polls' records is written in two runs, one per poll result."""
    other = Mailbox(mailbox.server, *mailbox.server.add_user())
    for box in (mailbox, other):
        box.server.seed(box.username, (make_message(i) for i in range(10)))
    worker = FetcherWorker(settings)
    try:
        polls = [_poll(worker, create_enabled(api, box)) for box in (mailbox, other)]
    finally:
        worker.close()
    before = REGISTRY.get_sample_value("mailintake_store_messages_stored_total") or 0.0
    writer.write([record for sink in polls for record in (*sink.chunks, *sink.results)])
    after = REGISTRY.get_sample_value("mailintake_store_messages_stored_total") or 0.0
    assert db.message_count() == 20
    assert after - before == 20
