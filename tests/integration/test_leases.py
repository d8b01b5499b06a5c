"""One owner per mailbox: two fetchers handed the same connection at once, and a fetcher whose
lease ended while it was paused, against real Dovecot, PostgreSQL and the broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.poll import Budget
from mailintake_fetcher.worker import FetcherWorker
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.events import ErrorKind, PollDue, PollOutcome, PollResult
from mailintake_shared.fetched import FetchedPart
from mailintake_shared.settings import Settings
from mailintake_store.writer import StoreWriter
from tests.api import WITHOUT_ESTIMATE
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database
from tests.harness.polls import ListSink, poll_due
from tests.integration.conftest import imap_connection_body, server_flags

pytestmark = pytest.mark.integration
BUDGET = Budget(
    max_messages=5000, max_bytes=10**9, max_seconds=60, batch_messages=100, chunk_bytes=65536
)


@pytest.fixture
def writer(settings: Settings) -> Iterator[StoreWriter]:
    engine = make_engine(settings)
    yield StoreWriter(make_session_factory(engine), topic_prefix=settings.topic_prefix)
    engine.dispose()


def _due(connection_id: str) -> PollDue:
    return poll_due(uuid.UUID(connection_id))


def _store(writer: StoreWriter, sink: ListSink) -> int:
    records: list[FetchedPart | PollResult] = [*sink.chunks, *sink.results]
    return writer.write(records).stale


def _connection(api: TestClient, mailbox: Mailbox) -> str:
    created = api.post("/connections", json=imap_connection_body(mailbox))
    cid: str = created.json()["id"]
    assert api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).status_code == 200
    return cid


def test_two_fetchers_handed_one_connection_poll_it_once(
    settings: Settings, api: TestClient, mailbox: Mailbox, db: Database, writer: StoreWriter
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i, size=8000) for i in range(600)))
    cid = _connection(api, mailbox)
    workers = [FetcherWorker(settings), FetcherWorker(settings)]

    def race() -> list[tuple[PollResult | None, ListSink]]:
        answers: list[tuple[PollResult | None, ListSink]] = []
        start = threading.Barrier(2)

        def poll(worker: FetcherWorker) -> None:
            sink = ListSink()
            start.wait()
            answers.append((worker.poll(_due(cid), sink), sink))

        threads = [threading.Thread(target=poll, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return answers

    try:
        first = race()
        outcomes = sorted(r.outcome for r, _ in first if r is not None)
        assert outcomes == [PollOutcome.OK, PollOutcome.SKIPPED]
        for _, sink in first:
            _store(writer, sink)
        assert db.message_count() == db.distinct_messages() == 600
        second = race()  # the actions: applied by one fetcher only
        applied = [r.actions_applied for r, _ in second if r is not None]
        assert sorted(applied) == [0, 600]
    finally:
        for worker in workers:
            worker.close()
    assert server_flags(mailbox) == (600, 600)


def test_a_fetcher_whose_lease_ended_changes_nothing(
    settings: Settings, api: TestClient, mailbox: Mailbox, db: Database, writer: StoreWriter
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(20)))
    cid = _connection(api, mailbox)
    worker = FetcherWorker(settings)
    repository = worker._repository
    try:
        result = worker.poll(_due(cid), sink := ListSink())
        assert result is not None
        assert result.messages == 20
        _store(writer, sink)  # committed: their \\Seen is pending now

        # Fetcher A takes the lease, is paused past it, and B takes over.
        config = repository.connection(uuid.UUID(cid))
        assert config is not None
        token_a = repository.acquire_lease(uuid.UUID(cid), "fetcher-a", 0.5)
        assert token_a is not None
        time.sleep(0.7)
        token_b = repository.acquire_lease(uuid.UUID(cid), "fetcher-b", 60)
        assert token_b is not None
        assert token_b > token_a
        stale_sink = ListSink()
        stale = ImapPoll(
            config,
            _due(cid),
            repository,
            stale_sink,
            BUDGET,
            lease_token=token_a,
            fence=lambda: repository.lease_held(uuid.UUID(cid), token_a),
        ).run()
        assert stale.error_kind is ErrorKind.LEASE_LOST
        assert server_flags(mailbox) == (20, 0)  # no \\Seen from the stale owner
        pending = db.scalar("SELECT count(*) FROM messages WHERE action_state = 'pending'")
        assert pending == 20

        # And the store drops what a stale owner publishes.
        mailbox.server.seed(mailbox.username, [make_message(99)])
        late = ImapPoll(config, _due(cid), repository, late_sink := ListSink(), BUDGET,
                        lease_token=token_a).run()  # fmt: skip
        assert late.messages == 1
        assert _store(writer, late_sink) == len(late_sink.chunks) + 1
        assert db.message_count() == 20
    finally:
        worker.close()
