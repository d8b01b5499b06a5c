"""The stalled-poll watchdog on the running scheduler: a connection that keeps failing is
reported stalled (connection.health, the API's status), then recovered."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailintake_devstack.broker import free_port
from mailintake_shared.events import ConnectionHealthChanged, HealthState
from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.api import WITHOUT_ESTIMATE, api_client
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import imap_connection_body

pytestmark = pytest.mark.integration


def _health(settings: Settings) -> list[ConnectionHealthChanged]:
    records = read_topic_to_end(settings, Topic.CONNECTION_HEALTH)
    return [ConnectionHealthChanged.model_validate_json(r.value) for r in records if r.value]


def test_a_failing_connection_is_reported_stalled_then_recovered(
    pipeline_settings: Settings, mailbox: Mailbox, db: Database, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(update={"stalled_after_seconds": 4.0})
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    mailbox.server.seed(mailbox.username, [make_message(1)])
    try:
        with api_client(settings) as api:
            body = imap_connection_body(mailbox, port=free_port())  # nothing listens there
            cid = api.post("/connections", json=body).json()["id"]
            api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE)
            wait_until(
                lambda: [h.state for h in _health(settings)] == [HealthState.STALLED],
                timeout_s=60,
                message="reported stalled",
            )
            (stalled,) = _health(settings)
            assert str(stalled.connection_id) == cid
            assert stalled.reason.startswith("no successful poll for")
            assert stalled.last_success_at is None
            assert api.get(f"/connections/{cid}").json()["status"]["stalled"] is True

            api.patch(f"/connections/{cid}", json={"port": mailbox.server.ports.imaps})
            api.post(f"/connections/{cid}/poll")
            wait_until(
                lambda: [h.state for h in _health(settings)][-1:] == [HealthState.RECOVERED],
                timeout_s=60,
                message="reported recovered",
            )
            wait_until(lambda: db.message_count() == 1, timeout_s=30, message="then it ingests")
            assert api.get(f"/connections/{cid}").json()["status"]["stalled"] is False
        pipeline.assert_running()
    finally:
        pipeline.stop_all()
