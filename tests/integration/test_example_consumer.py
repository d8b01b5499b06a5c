"""The documented downstream example really consumes mail.stored, routing on ``ce_type``."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailintake_shared.cloudevents import headers
from mailintake_shared.events import HeaderSummary, MailStored, b64
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name
from tests.harness.mail import make_message
from tests.harness.pipeline import settings_env

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consume_mail_stored.py"


def test_example_consumer_prints_each_message_once(settings: Settings) -> None:
    producer = ReliableProducer(settings, "test")
    topic = topic_name(settings.topic_prefix, Topic.MAIL_STORED)
    connection_id = uuid.uuid4()
    futures = []
    for message_id, replay in ((1, False), (2, False), (1, True)):  # the third: a replay
        raw = make_message(message_id)
        event = MailStored(
            message_id=message_id,
            connection_id=connection_id,
            folder="INBOX",
            server_id=f"7:{message_id}",
            size=len(raw),
            sha256="0" * 64,
            internal_date=None,
            stored_at=datetime.now(UTC),
            headers=HeaderSummary(**{"from": "a@example.org", "subject": f"Request {message_id}"}),
            raw_b64=b64(raw),
            raw_path=f"/messages/{message_id}/raw",
        )
        found = headers(event, settings.topic_prefix, replay=replay)
        key, value = str(connection_id).encode(), event.to_bytes()
        futures.append(producer.send(topic, key, value, found))
        if message_id == 1 and not replay:  # a later version this handler does not know
            newer = [(k, b"mailintake.mail.stored.v2" if k == "ce_type" else v) for k, v in found]
            futures.append(producer.send(topic, key, b'{"schema_version": 2}', newer))
    producer.settle(futures)
    producer.close()

    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--group", "g-example", "--max-messages", "2"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("#1 from 'a@example.org' subject 'Request 1': Hello, this is")
    assert lines[1].startswith("#2 ")
