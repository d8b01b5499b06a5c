"""The IMAP pipeline end to end on real Dovecot, PostgreSQL and the broker."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import imap_connection_body, imap_session

pytestmark = pytest.mark.integration


def create_enabled(api: TestClient, mailbox: Mailbox, **overrides: Any) -> str:
    created = api.post("/connections", json=imap_connection_body(mailbox, **overrides))
    assert created.status_code == 201, created.text
    connection_id: str = created.json()["id"]
    assert api.post(f"/connections/{connection_id}/enable").status_code == 200
    return connection_id


def server_flags(mailbox: Mailbox) -> tuple[int, int]:
    """(messages in INBOX, of which \\Seen)."""
    with imap_session(mailbox) as client:
        total = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
        seen = len(client.search(["SEEN"]))
    return total, seen


def test_ingests_a_mailbox_once_then_only_new_mail_and_marks_it_seen(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(2000)))
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(api, mailbox)

    wait_until(lambda: db.message_count() >= 2000, timeout_s=180, message="2000 messages stored")
    wait_until(
        lambda: server_flags(mailbox) == (2000, 2000),
        timeout_s=60,
        message="every server message \\Seen",
    )
    assert db.message_count() == 2000
    assert db.distinct_messages() == 2000

    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(5000, 5010)))
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    wait_until(lambda: db.message_count() >= 2010, timeout_s=60, message="10 new stored")
    wait_until(
        lambda: server_flags(mailbox) == (2010, 2010),
        timeout_s=60,
        message="the new ones \\Seen too",
    )
    assert db.message_count() == 2010
    assert db.distinct_messages() == 2010
    status = api.get(f"/connections/{connection_id}").json()["status"]
    assert status["messages_stored"] == 2010
    assert status["consecutive_failures"] == 0
    assert status["last_success_at"] is not None
    pipeline.assert_running()
