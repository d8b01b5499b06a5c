"""The IMAP pipeline end to end on each real mail server, PostgreSQL and the broker."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.harness.mail import EIGHT_BIT, make_message
from tests.harness.mailserver import ServerMailbox, served
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import create_enabled, server_flags

pytestmark = pytest.mark.integration


def test_ingests_a_mailbox_once_then_only_new_mail_and_marks_it_seen(
    pipeline: Pipeline, api: TestClient, db: Database, server_mailbox: ServerMailbox
) -> None:
    mailbox = server_mailbox
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

    mailbox.server.seed(
        mailbox.username, [*(make_message(i) for i in range(5000, 5009)), EIGHT_BIT]
    )
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    wait_until(lambda: db.message_count() >= 2010, timeout_s=60, message="10 new stored")
    wait_until(
        lambda: server_flags(mailbox) == (2010, 2010),
        timeout_s=60,
        message="the new ones \\Seen too",
    )
    assert db.message_count() == 2010
    assert db.distinct_messages() == 2010
    # Byte for byte what the server serves (which may differ from what was appended).
    stored = sorted(row.sha256 for row in db.rows("SELECT sha256 FROM messages"))
    assert stored == sorted(m.sha256 for m in served(mailbox).values())
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
