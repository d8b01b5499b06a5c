"""The stalled-poll watchdog on the running scheduler: a connection whose mail server is down
fails and is reported stalled (connection.health, the API's status) while another one goes on,
then recovers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from mailintake_devstack.broker import LocalBroker, free_port
from mailintake_scheduler.worker import SchedulerWorker
from mailintake_shared.events import ConnectionHealthChanged, HealthState
from mailintake_shared.kafka import ensure_topics, read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.api import WITHOUT_ESTIMATE, api_client
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.views import connection_view
from tests.integration.conftest import create_enabled, imap_connection_body

pytestmark = pytest.mark.integration


def _health(settings: Settings, connection_id: str) -> list[ConnectionHealthChanged]:
    records = read_topic_to_end(settings, Topic.CONNECTION_HEALTH)
    events = [ConnectionHealthChanged.model_validate_json(r.value) for r in records if r.value]
    return [e for e in events if str(e.connection_id) == connection_id]


def test_a_failing_connection_is_reported_stalled_then_recovered(
    pipeline_settings: Settings, mailbox: Mailbox, db: Database, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(update={"stalled_after_seconds": 4.0})
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    mailbox.server.seed(mailbox.username, [make_message(1)])
    healthy = Mailbox(mailbox.server, *mailbox.server.add_user(password="pw-healthy"))
    mailbox.server.seed(healthy.username, (make_message(i) for i in range(100, 130)))
    try:
        with api_client(settings) as api:
            body = imap_connection_body(mailbox, port=free_port())  # nothing listens there
            cid = api.post("/connections", json=body).json()["id"]
            api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE)
            create_enabled(api, healthy)  # the other connection goes on meanwhile
            wait_until(lambda: db.message_count() == 30, timeout_s=60, message="the other one")
            wait_until(
                lambda: (
                    api.get(f"/connections/{cid}").json()["status"]["last_error_kind"]
                    == "connection_refused"
                ),
                timeout_s=30,
                message="the failing one is marked failing",
            )
            wait_until(
                lambda: [h.state for h in _health(settings, cid)] == [HealthState.STALLED],
                timeout_s=60,
                message="reported stalled",
            )
            (stalled,) = _health(settings, cid)
            assert stalled.reason.startswith("no successful poll for")
            assert stalled.last_success_at is None
            assert api.get(f"/connections/{cid}").json()["status"]["stalled"] is True

            # A new port is a new destination: the password is given again (SECURITY.md).
            fixed = {"port": mailbox.server.ports.imaps, "password": mailbox.password}
            assert api.patch(f"/connections/{cid}", json=fixed).status_code == 200
            api.post(f"/connections/{cid}/poll")
            wait_until(
                lambda: [h.state for h in _health(settings, cid)][-1:] == [HealthState.RECOVERED],
                timeout_s=60,
                message="reported recovered",
            )
            wait_until(lambda: db.message_count() == 31, timeout_s=30, message="then it ingests")
            assert api.get(f"/connections/{cid}").json()["status"]["stalled"] is False
        pipeline.assert_running()
    finally:
        pipeline.stop_all()


def test_a_stall_found_while_the_broker_is_down_is_published_when_it_is_back(
    settings: Settings,
) -> None:
    """The schedule reports a stall once; if the broker refuses it then, the worker publishes
    it at its next pass, after the broker is back, rather than never."""
    own = LocalBroker().start()
    clock = [0.0]
    local = settings.model_copy(
        update={"kafka_bootstrap_servers": own.bootstrap_servers, "stalled_after_seconds": 60.0}
    )
    worker = SchedulerWorker(local, clock=lambda: clock[0])
    try:
        view = connection_view(id=uuid.uuid4(), enabled=True, interval_minutes=60, version=1)
        worker.schedule.connection_changed(view, clock[0])
        own.stop()
        clock[0] = 61.0
        with pytest.raises(KafkaError):
            worker.emit_health()
        own.start()  # memory storage: an empty broker on the same port
        ensure_topics(local)
        worker.emit_health()
        assert [h.state for h in _health(local, str(view.id))] == [HealthState.STALLED]
    finally:
        worker.close()
        own.stop()
