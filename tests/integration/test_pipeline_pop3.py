"""POP3 through the whole pipeline on each real mail server, PostgreSQL and the broker: UIDL
dedup over polls, and DELE only for what the database committed."""

from __future__ import annotations

import poplib
import ssl
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.harness.mail import EIGHT_BIT, make_message
from tests.harness.mailserver import ServerMailbox, served
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import create_enabled

pytestmark = pytest.mark.integration


def pop3_body(mailbox: ServerMailbox, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocol": "pop3",
        "port": mailbox.server.ports.pop3s,
        "folder": None,
    }
    body.update(overrides)
    return body


def on_server(mailbox: ServerMailbox) -> int:
    context = ssl.create_default_context(cafile=str(mailbox.server.pki.ca_pem))
    client = poplib.POP3_SSL("127.0.0.1", mailbox.server.ports.pop3s, context=context, timeout=10)
    try:
        client.user(mailbox.username)
        client.pass_(mailbox.password)
        return int(client.stat()[0])
    finally:
        client.quit()


def stored_after_poll(api: TestClient, db: Database, connection_id: str, expected: int) -> None:
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    wait_until(lambda: db.message_count() >= expected, timeout_s=60, message=f"{expected} stored")


def test_keep_on_server_stores_each_message_once_over_polls(
    pipeline: Pipeline, api: TestClient, db: Database, server_mailbox: ServerMailbox
) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, [*(make_message(i) for i in range(19)), EIGHT_BIT])
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(api, mailbox, **pop3_body(mailbox))
    wait_until(lambda: db.message_count() >= 20, timeout_s=90, message="20 stored")
    for round_ in range(2):
        start = 100 + round_ * 10
        mailbox.server.seed(mailbox.username, (make_message(i) for i in range(start, start + 5)))
        stored_after_poll(api, db, connection_id, 25 + round_ * 5)
    # A poll with nothing new, then the counts: every message once, all still on the server.
    polls = db.scalar("SELECT count(*) FROM poll_log WHERE connection_id = :c", c=connection_id)
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    wait_until(
        lambda: (
            db.scalar("SELECT count(*) FROM poll_log WHERE connection_id = :c", c=connection_id)
            > polls
        ),
        timeout_s=60,
        message="one more poll",
    )
    assert db.message_count() == 30
    assert db.distinct_messages() == 30
    assert on_server(mailbox) == 30
    stored = sorted(row.sha256 for row in db.rows("SELECT sha256 FROM messages"))
    assert stored == sorted(m.sha256 for m in served(mailbox).values())
    duplicates = db.scalar("SELECT coalesce(sum(duplicates), 0) FROM poll_log")
    assert duplicates == 0
    pipeline.assert_running()


def test_delete_removes_only_what_the_database_committed(
    pipeline: Pipeline, api: TestClient, db: Database, server_mailbox: ServerMailbox
) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(8)))
    pipeline.start("scheduler", "fetcher")  # no store: nothing gets committed
    connection_id = create_enabled(
        api, mailbox, **pop3_body(mailbox, after_download="delete", interval_minutes=1)
    )
    wait_until(
        lambda: "poll finished" in pipeline.logs(), timeout_s=60, message="a poll without store"
    )
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    wait_until(
        lambda: pipeline.logs().count("poll finished") >= 2, timeout_s=60, message="second poll"
    )
    assert db.message_count() == 0
    assert on_server(mailbox) == 8  # downloaded twice, deleted never

    pipeline.start("store")
    wait_until(lambda: db.message_count() >= 8, timeout_s=90, message="8 stored")
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    wait_until(lambda: on_server(mailbox) == 0, timeout_s=60, message="deleted after commit")
    assert db.message_count() == 8
    assert db.distinct_messages() == 8
    applied = db.scalar("SELECT count(*) FROM messages WHERE action_state = 'applied'")
    assert applied == 8
    pipeline.assert_running()
