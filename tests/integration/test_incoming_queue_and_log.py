"""The Incoming Mail Queue and Log followed through every state, with the pipeline's own
parts run one step at a time (fetch, store, publish, server action) on real Dovecot,
PostgreSQL and the broker, and read through the API."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailintake_config_api.incoming import purge
from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.poll import Budget
from mailintake_fetcher.repository import FetcherRepository
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.events import PollResult
from mailintake_shared.fetched import FetchedPart
from mailintake_shared.kafka import ReliableProducer, read_topic_to_end
from mailintake_shared.outbox import OutboxRelay
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from mailintake_store.writer import StoreWriter
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database
from tests.harness.planted import planted
from tests.harness.polls import ListSink, run_poll
from tests.harness.views import LOOPBACK
from tests.integration.conftest import imap_connection_body, imap_session

pytestmark = pytest.mark.integration
BUDGET = Budget(
    max_messages=100, max_bytes=10**9, max_seconds=60, batch_messages=50, chunk_bytes=64 * 1024
)


@dataclass
class Steps:
    """The pipeline's parts, each run when the test says so."""

    settings: Settings
    api: TestClient
    repository: FetcherRepository
    writer: StoreWriter
    relay: OutboxRelay

    def fetch(self, connection_id: str) -> tuple[PollResult, ListSink]:
        config = self.repository.connection(uuid.UUID(connection_id))
        assert config is not None
        return run_poll(ImapPoll, config, self.repository, BUDGET)

    def store(self, sink: ListSink, *, tamper: bool = False) -> None:
        now = datetime.now(UTC)  # what the broker's record timestamp says in production
        parts: list[FetchedPart | PollResult] = [
            replace(part, downloaded_at=now) for part in sink.chunks
        ]
        if tamper:  # the last message arrives with a digest its chunks do not add up to
            last = parts[-1]
            assert isinstance(last, FetchedPart)
            chunk = last.chunk.model_copy(update={"sha256": "0" * 64})
            parts[-1] = replace(last, chunk=chunk)
        self.writer.write([*parts, *sink.results])

    def queue(self, **params: Any) -> list[dict[str, Any]]:
        response = self.api.get("/queue", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture
def steps(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Steps]:
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    producer = ReliableProducer(settings, "test")
    with api_client(settings) as api:
        # The API's relay publishes every queued event (the store's too); held back here so
        # that the test decides when events go out (``Steps.relay``).
        monkeypatch.setattr(api.app.state.resources.relay, "flush", lambda: 0)  # type: ignore[attr-defined]
        yield Steps(
            settings,
            api,
            FetcherRepository(sessions, SecretBox(settings.encryption_keys), network=LOOPBACK),
            StoreWriter(sessions, topic_prefix=settings.topic_prefix),
            OutboxRelay(sessions, producer, inline_max_bytes=256 * 1024),
        )
    producer.close()
    engine.dispose()


def _create(steps: Steps, mailbox: Mailbox) -> str:
    created = steps.api.post("/connections", json=imap_connection_body(mailbox))
    cid: str = created.json()["id"]
    return cid


def test_a_message_through_every_state(steps: Steps, mailbox: Mailbox, database_url: str) -> None:
    mailbox.server.seed(mailbox.username, [make_message(1, size=200_000)])
    cid = _create(steps, mailbox)
    result, sink = steps.fetch(cid)
    assert result.messages == 1
    steps.store(sink)

    # Stored, event not yet published: awaiting_publish, and the .eml downloads.
    (entry,) = steps.queue(connection_id=cid)
    assert (entry["kind"], entry["state"]) == ("message", "awaiting_publish")
    raw = steps.api.get(entry["raw_path"])
    assert raw.content.replace(b"\r\n", b"\n") == make_message(1, size=200_000).replace(
        b"\r\n", b"\n"
    )
    (logged,) = steps.api.get("/log/messages", params={"connection_id": cid}).json()["items"]
    assert (logged["outcome"], logged["published_at"]) == ("stored", None)
    assert logged["downloaded_at"] is not None

    # Published: the server action is still pending.
    steps.relay.flush()
    (entry,) = steps.queue(connection_id=cid)
    assert entry["state"] == "action_pending"
    assert steps.queue(connection_id=cid, state="awaiting_publish") == []

    # The next poll applies \\Seen: through, out of the queue; the log has every time.
    steps.fetch(cid)
    assert steps.queue(connection_id=cid) == []
    (logged,) = steps.api.get("/log/messages", params={"connection_id": cid}).json()["items"]
    assert logged["published_at"] is not None
    assert (logged["action_state"], logged["action_applied_at"] is not None) == ("applied", True)
    with imap_session(mailbox) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["SEEN"])) == 1

    # A second download of the same message is logged as a skipped duplicate.
    db = Database(database_url)
    try:
        db.execute("UPDATE mailbox_state SET last_uid = 0")
    finally:
        db.close()
    _, sink = steps.fetch(cid)
    steps.store(sink)
    outcomes = [
        i["outcome"]
        for i in steps.api.get("/log/messages", params={"connection_id": cid}).json()["items"]
    ]
    assert outcomes == ["duplicate", "stored"]


def test_an_event_whose_message_is_gone_does_not_stop_the_others(
    steps: Steps, mailbox: Mailbox, database_url: str
) -> None:
    """The outbox holds only message ids; a row deleted behind the API's back (by hand in
    the database) is skipped with a warning, and the events queued with it go out."""
    mailbox.server.seed(mailbox.username, [make_message(i) for i in range(3)])
    cid = _create(steps, mailbox)
    _, sink = steps.fetch(cid)
    steps.store(sink)
    db = Database(database_url)
    try:
        ids = [row.id for row in db.rows("SELECT id FROM messages ORDER BY id")]
        db.execute("DELETE FROM messages WHERE id = :id", id=ids[1])
    finally:
        db.close()

    steps.relay.flush()
    announced = [
        json.loads(record.value)
        for record in read_topic_to_end(steps.settings, Topic.MAIL_STORED)
        if record.key == cid.encode()
    ]
    assert [event["message_id"] for event in announced] == [ids[0], ids[2]]
    assert base64.b64decode(announced[0]["raw_b64"]) == make_message(0)
    assert steps.queue(connection_id=cid, state="awaiting_publish") == []


def test_a_failed_message_is_kept_retried_and_dismissed(steps: Steps, mailbox: Mailbox) -> None:
    mailbox.server.seed(mailbox.username, [make_message(i) for i in range(3)])
    cid = _create(steps, mailbox)
    _, sink = steps.fetch(cid)
    steps.store(sink, tamper=True)

    (failed,) = steps.queue(connection_id=cid, state="failed")
    assert failed["kind"] == "failed"
    assert "SHA-256 mismatch" in failed["reason"]
    assert steps.api.get(failed["raw_path"]).content == sink.chunks[-1].data
    rejected = steps.api.get("/log/messages", params={"outcome": "rejected"}).json()["items"]
    assert [r["server_id"] for r in rejected] == [failed["server_id"]]

    # Retry: the next poll downloads it again, and this time it is stored.
    path = f"/queue/failed/{failed['id']}"
    assert steps.api.post(f"{path}/retry").status_code == 200
    assert steps.queue(connection_id=cid, state="failed") == []
    _, sink = steps.fetch(cid)
    assert [p.chunk.server_id for p in sink.chunks] == [failed["server_id"]]
    steps.store(sink)
    stored = steps.api.get("/log/messages", params={"outcome": "stored"}).json()["items"]
    assert failed["server_id"] in [s["server_id"] for s in stored]

    # Delete: a failed entry is dismissed, a stored one deleted with its event.
    mailbox.server.seed(mailbox.username, [make_message(9)])
    _, sink = steps.fetch(cid)
    steps.store(sink, tamper=True)
    (again,) = steps.queue(connection_id=cid, state="failed")
    assert steps.api.delete(f"/queue/failed/{again['id']}").status_code == 204
    assert steps.queue(connection_id=cid, state="failed") == []
    assert steps.api.get(f"/queue/failed/{again['id']}/raw").status_code == 404
    message = steps.queue(connection_id=cid, state="awaiting_publish")[0]
    assert steps.api.delete(f"/queue/message/{message['id']}").status_code == 204
    assert steps.api.get(f"/messages/{message['id']}").status_code == 404


def test_a_failing_poll_is_logged_and_filtered(steps: Steps, mailbox: Mailbox) -> None:
    wrong_password = planted("wrong-password")
    body = imap_connection_body(mailbox, password=wrong_password)
    cid = steps.api.post("/connections", json=body).json()["id"]
    _, sink = steps.fetch(cid)
    steps.store(sink)
    good = _create(steps, mailbox)
    _, sink = steps.fetch(good)
    steps.store(sink)

    failed = steps.api.get("/log/polls", params={"outcome": "failed"}).json()
    assert failed["total"] == 1
    (entry,) = failed["items"]
    assert (entry["connection_id"], entry["error_kind"]) == (cid, "authentication")
    assert wrong_password not in str(entry)
    assert steps.api.get("/log/polls", params={"connection_id": good}).json()["total"] == 1
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert steps.api.get("/log/polls", params={"since": later}).json()["total"] == 0
    assert steps.api.get("/log/polls", params={"limit": 1}).json()["total"] == 2
    assert len(steps.api.get("/log/polls", params={"limit": 1}).json()["items"]) == 1


def test_retention_purges_old_log_rows_and_failed_entries(
    steps: Steps, mailbox: Mailbox, database_url: str
) -> None:
    mailbox.server.seed(mailbox.username, [make_message(1), make_message(2)])
    cid = _create(steps, mailbox)
    _, sink = steps.fetch(cid)
    steps.store(sink, tamper=True)
    db = Database(database_url)
    try:
        old = datetime.now(UTC) - timedelta(days=40)
        db.execute("UPDATE poll_log SET started_at = :t", t=old)
        db.execute("UPDATE message_log SET logged_at = :t WHERE outcome = 'stored'", t=old)
        db.execute("UPDATE failed_messages SET failed_at = :t", t=old)
        resources = steps.api.app.state.resources  # type: ignore[attr-defined]
        keep_all = steps.settings.model_copy(
            update={"log_retention_days": 0, "queue_retention_days": 0}
        )
        with resources.sessions() as session, session.begin():
            assert purge(session, keep_all).polls == 0
        with resources.sessions() as session, session.begin():
            purged = purge(session, steps.settings)
        assert (purged.polls, purged.messages_logged, purged.failed) == (1, 1, 1)
        assert db.scalar("SELECT count(*) FROM message_log") == 1  # the recent rejection
        assert db.scalar("SELECT count(*) FROM messages") == 1  # stored mail is never purged
    finally:
        db.close()
