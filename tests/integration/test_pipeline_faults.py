"""Promises 1, 2 and 7 under crashes and outages: nothing lost, nothing twice, nothing stuck."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailintake_devstack.broker import LocalBroker
from mailintake_shared.settings import Settings
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import create_enabled, drain

pytestmark = pytest.mark.integration

TOTAL = 5000


def assert_exactly_once(db: Database, expected: int) -> None:
    assert db.message_count() == expected
    assert db.distinct_messages() == expected  # every seeded Message-ID once


@pytest.mark.parametrize("victim", ["fetcher", "store"])
def test_kill_9_mid_ingestion_loses_and_duplicates_nothing(
    victim: str, pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(TOTAL)))
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(api, mailbox)
    wait_until(lambda: db.message_count() >= 1200, timeout_s=120, message="ingestion under way")
    pipeline.kill(victim)
    stored_at_kill = db.message_count()
    assert stored_at_kill < TOTAL, "ingestion finished before the kill; nothing was tested"
    pipeline.start(victim)
    drain(api, connection_id, db, TOTAL, timeout_s=240)
    assert_exactly_once(db, TOTAL)
    if victim == "fetcher":
        # Polls resumed at the cursor: the completed polls downloaded each message at most
        # once in all (a restart from the first UID would have fetched thousands again).
        assert int(db.scalar("SELECT coalesce(sum(fetched), 0) FROM poll_log")) <= TOTAL
    pipeline.assert_running()


def test_with_the_store_down_delete_waits_for_the_commit(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(300)))
    pipeline.start("scheduler", "fetcher")
    connection_id = create_enabled(api, mailbox, after_download="delete")
    log = pipeline.log_dir / "fetcher.log"
    wait_until(
        lambda: log.exists() and log.read_text().count('"poll finished"') >= 2,
        timeout_s=90,
        message="two polls ran (the first, and one re-issued)",
    )
    assert db.message_count() == 0
    assert _inbox_size(mailbox) == 300  # nothing deleted: nothing is committed yet

    pipeline.start("store")
    drain(api, connection_id, db, 300, timeout_s=120)
    wait_until(
        lambda: _inbox_size(mailbox) == 0,
        timeout_s=90,
        message="committed messages deleted from the server",
    )
    assert_exactly_once(db, 300)
    assert db.scalar("SELECT count(*) FROM messages WHERE action_state <> 'applied'") == 0


def test_broker_restarted_empty_mid_ingestion_loses_nothing(
    pipeline_settings: Settings, tmp_path: Path, database_url: str, mailbox: Mailbox
) -> None:
    total = 3000
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(total)))
    broker = LocalBroker().start()
    settings = pipeline_settings.model_copy(
        update={
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "connections_resync_seconds": 5.0,
        }
    )
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    db = Database(database_url)
    try:
        with api_client(settings) as api:
            connection_id = create_enabled(api, mailbox)
            wait_until(
                lambda: db.message_count() >= 500, timeout_s=120, message="ingestion under way"
            )
            broker.kill()  # memory storage: every topic, record and offset is gone
            broker.start()
            assert db.message_count() < total, "finished before the broker loss"
            drain(api, connection_id, db, total, timeout_s=240)
            assert_exactly_once(db, total)
            pipeline.assert_running()
    finally:
        pipeline.stop_all()
        db.close()
        broker.stop()


def _inbox_size(mailbox: Mailbox) -> int:
    from tests.integration.conftest import server_flags

    return server_flags(mailbox)[0]
