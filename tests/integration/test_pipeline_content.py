"""What arrives is what is stored: huge mail intact, hostile mail kept and flagged, bad
records dead-lettered while the partition keeps flowing, UIDVALIDITY resets, read mail."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.events import DeadLetter
from mailintake_shared.kafka import ReliableProducer, read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name
from tests.conftest import Mailbox
from tests.harness.corpus import MALFORMED, hostile
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import create_enabled, drain, imap_session, server_flags

pytestmark = pytest.mark.integration


def test_a_50_mb_message_and_a_malformed_corpus_are_ingested(
    pipeline: Pipeline,
    api: TestClient,
    db: Database,
    mailbox: Mailbox,
    pipeline_settings: Settings,
) -> None:
    huge = make_message(1, size=50 * 1024 * 1024, subject="the big one")
    normal = [make_message(i) for i in range(100, 110)]
    corpus = [*MALFORMED.values(), *hostile().values()]
    mailbox.server.seed(mailbox.username, [huge, *corpus, *normal])
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(api, mailbox)
    expected = 1 + len(corpus) + len(normal)
    drain(api, connection_id, db, expected, timeout_s=240)
    assert db.message_count() == expected

    big = db.rows("SELECT id, size, sha256, subject FROM messages WHERE size > 10000000")
    assert len(big) == 1
    assert big[0].size == len(huge)
    assert big[0].sha256 == hashlib.sha256(huge).hexdigest()
    raw = api.get(f"/messages/{big[0].id}/raw")
    assert raw.status_code == 200
    assert hashlib.sha256(raw.content).hexdigest() == big[0].sha256

    problems = {
        row.subject: json.loads(row.problems or "[]")
        for row in db.rows("SELECT subject, problems FROM messages")
    }
    assert "no Message-ID header" in problems["anonymous"]
    # Dovecot hands NUL bytes out as 0x80: they arrive as 8-bit bytes.
    assert any("8-bit" in p for p in next(v for k, v in problems.items() if k and "nul" in k))
    assert any("8-bit" in p for p in next(v for k, v in problems.items() if k and "Gr" in k))
    assert problems["Request 100"] == []

    # Every stored message was announced once on mail.stored, big ones by reference only.
    announced = read_topic_to_end(pipeline_settings, Topic.MAIL_STORED)
    events = [json.loads(r.value) for r in announced]
    assert len(events) == expected
    assert len({e["message_id"] for e in events}) == expected
    big_event = next(e for e in events if e["size"] > 10_000_000)
    assert big_event["raw_b64"] is None
    assert big_event["raw_path"] == f"/messages/{big[0].id}/raw"
    small = next(e for e in events if e["headers"]["subject"] == "Request 100")
    assert base64.b64decode(small["raw_b64"]) == make_message(100)
    pipeline.assert_running()


def test_a_bad_record_is_dead_lettered_and_the_partition_keeps_flowing(
    pipeline: Pipeline,
    api: TestClient,
    db: Database,
    mailbox: Mailbox,
    pipeline_settings: Settings,
) -> None:
    pipeline.start("scheduler", "fetcher", "store")
    producer = ReliableProducer(pipeline_settings, "test")
    fetched = topic_name(pipeline_settings.topic_prefix, Topic.MAIL_FETCHED)
    key = str(uuid.uuid4()).encode()
    producer.settle(
        [
            producer.send(fetched, key, b"{not json"),
            producer.send(fetched, key, b"raw bytes", [("mailintake-envelope", b'{"kind": "x"}')]),
        ]
    )
    producer.close()
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(20)))
    connection_id = create_enabled(api, mailbox)
    drain(api, connection_id, db, 20, timeout_s=120)
    letters = wait_until(
        lambda: [
            DeadLetter.model_validate_json(r.value)
            for r in read_topic_to_end(pipeline_settings, Topic.DEAD_LETTER)
        ],
        timeout_s=30,
        message="dead letters published",
    )
    assert len(letters) == 2
    assert all(letter.service == "store" and letter.reason for letter in letters)
    assert {base64.b64decode(letter.value_b64 or "") for letter in letters} == {
        b"{not json",
        b"raw bytes",
    }
    assert any(letter.headers.get("mailintake-envelope") == '{"kind": "x"}' for letter in letters)


def test_uidvalidity_reset_stores_nothing_twice_and_read_mail_is_ingested(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    server = mailbox.server
    server.seed(mailbox.username, (make_message(i) for i in range(40)))
    server.seed(mailbox.username, (make_message(i) for i in range(40, 45)), seen=True)
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(api, mailbox)
    drain(api, connection_id, db, 45, timeout_s=120)
    assert db.scalar("SELECT count(*) FROM messages WHERE seen_before") == 5
    wait_until(lambda: server_flags(mailbox) == (45, 45), timeout_s=60, message="all \\Seen")
    with imap_session(mailbox) as client:
        before = client.select_folder("INBOX")[b"UIDVALIDITY"]

    # The server forgets its UIDs: a new UIDVALIDITY, every message under a new UID.
    maildir = server.maildir(mailbox.username)
    for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log"):
        (Path(maildir) / name).unlink(missing_ok=True)
    for path in (maildir / "cur").iterdir():  # and forgets the flags too
        path.rename(path.with_name(path.name.split(":2,")[0] + ":2,"))
    server.seed(mailbox.username, (make_message(i) for i in range(1000, 1005)))
    with imap_session(mailbox) as client:
        after = client.select_folder("INBOX")[b"UIDVALIDITY"]
    assert after != before

    api.post(f"/connections/{connection_id}/poll")
    drain(api, connection_id, db, 50, timeout_s=120)
    wait_until(
        lambda: server_flags(mailbox) == (50, 50),
        timeout_s=60,
        message="re-keyed messages marked \\Seen under their new UIDs",
    )
    assert db.message_count() == 50
    assert db.distinct_messages() == 50
    assert db.scalar("SELECT count(DISTINCT uidvalidity) FROM messages") == 1
    pipeline.assert_running()
