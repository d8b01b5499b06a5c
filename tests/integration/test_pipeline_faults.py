"""Promises 1, 2 and 7 when the store or the broker is gone: nothing lost, nothing twice, nothing
deleted before its commit (kills and restarts of every service: ``test_outages``)."""

from __future__ import annotations

import time
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
            # No timer: the config API republishes on seeing the new connections topic.
            "connections_resync_seconds": 0.0,
            # Slices of 300: when the broker goes, most of the mail is still on the server
            # (one slice of 3,000 was all published, and often all stored, before the kill).
            "poll_max_messages": 300,
        }
    )
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    db = Database(database_url)
    try:
        with api_client(settings) as api:
            connection_id = create_enabled(api, mailbox, after_download="delete")
            wait_until(
                lambda: db.message_count() >= 500, timeout_s=120, message="ingestion under way"
            )
            broker.kill()  # memory storage: every topic, record and offset is gone
            time.sleep(10)  # the services retry meanwhile; nothing is deleted uncommitted
            assert total - _inbox_size(mailbox) <= db.message_count()
            pipeline.assert_running()
            broker.start()
            assert db.message_count() < total, "finished before the broker loss"
            try:
                drain(api, connection_id, db, total, timeout_s=240)
            except AssertionError as stalled:  # say what the services were doing
                tails = "\n".join(
                    f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                    for log in sorted(pipeline.log_dir.glob("*.log"))
                )
                raise AssertionError(f"{stalled}\n{tails}") from None
            assert_exactly_once(db, total)
            wait_until(lambda: _inbox_size(mailbox) == 0, timeout_s=60, message="all deleted")
            pipeline.assert_running()
    finally:
        pipeline.stop_all()
        db.close()
        broker.stop()


def _inbox_size(mailbox: Mailbox) -> int:
    from tests.integration.conftest import server_flags

    return server_flags(mailbox)[0]
