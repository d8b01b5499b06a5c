"""The IMAP pipeline end to end on real Dovecot, PostgreSQL and the broker."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import create_enabled, server_flags

pytestmark = pytest.mark.integration


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
    logged = db.scalar(
        "SELECT count(*) FROM message_log WHERE outcome = 'stored' AND downloaded_at IS NOT NULL"
    )
    assert logged == 2010
    wait_until(
        lambda: db.scalar("SELECT count(*) FROM messages WHERE published_at IS NULL") == 0,
        timeout_s=30,
        message="every message marked published",
    )
    status = api.get(f"/connections/{connection_id}").json()["status"]
    assert status["messages_stored"] == 2010
    assert status["consecutive_failures"] == 0
    assert status["last_success_at"] is not None
    pipeline.assert_running()
