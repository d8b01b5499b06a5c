"""The ledger through the whole pipeline (broker, PostgreSQL, the four services as
processes) on the scripted quirk server: a message the server will not deliver, or one over
``MAILINTAKE_MAX_MESSAGE_BYTES``, ends in the Incoming Mail Queue with the reason and is
announced nowhere; one expunged meanwhile ends nowhere; a UID the server lists but never had
does not move the cursor over the mail that comes next; every other message is stored and
announced once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.settings import Settings
from tests.api import enable
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.quirks import QuirkServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[QuirkServer]:
    with QuirkServer() as running:
        yield running


@pytest.fixture
def pipeline_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(
        update={"download_attempts": 2, "max_message_bytes": 1024 * 1024}
    )


def test_a_message_the_server_will_not_deliver_waits_in_the_queue_and_the_rest_flows(
    pipeline: Pipeline, api: TestClient, db: Database, server: QuirkServer
) -> None:
    # UID 9 is over MAILINTAKE_MAX_MESSAGE_BYTES
    sent = [make_message(i, size=1024 * 1024 + 100_000 if i == 8 else 2048) for i in range(10)]
    for raw in sent:
        server.mailbox.append(raw)
    server.imap.body_nil.add(4)  # damaged on the server, still there
    server.imap.expunged_meanwhile.add(7)  # expunged by another session meanwhile
    server.imap.search_extra.add(1_000_000)  # listed by the server, never held
    pipeline.start()
    created = api.post(
        "/connections",
        json={
            "name": "quirky",
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": server.imap_port,
            "encryption": "none",
            "username": server.username,
            "password": server.password,
            "interval_minutes": 1,
        },
    )
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert enable(api, cid).status_code == 200

    def queued() -> list[dict[str, str]]:
        api.post(f"/connections/{cid}/poll")
        items: list[dict[str, str]] = api.get("/queue", params={"state": "failed"}).json()["items"]
        return items

    def both_queued() -> list[dict[str, str]] | None:
        items = queued()
        return items if len(items) == 2 else None

    entries = wait_until(both_queued, timeout_s=120, interval_s=3, message="both set aside")
    reasons = {entry["server_id"]: entry["reason"] for entry in entries}
    assert "NIL" in reasons["1000:4"]
    assert "MAILINTAKE_MAX_MESSAGE_BYTES" in reasons["1000:9"]
    assert db.message_count() == 7  # all but the damaged, the expunged and the large one
    stored = {bytes(r.raw) for r in db.rows("SELECT raw FROM messages")}
    assert stored == {raw for i, raw in enumerate(sent) if i not in (3, 6, 8)}
    assert db.scalar("SELECT last_uid FROM mailbox_state") == 10  # not 1000000
    wait_until(
        lambda: db.scalar("SELECT count(*) FROM messages WHERE published_at IS NULL") == 0,
        timeout_s=30,
        message="every stored message announced",
    )
    unfetched = db.scalar("SELECT count(*) FROM message_log WHERE outcome = 'unfetched'")
    assert unfetched == 4  # two attempts each, then set aside
    status = api.get(f"/connections/{cid}").json()["status"]
    assert status["last_error"] is None  # the poll itself went well

    later = make_message(10)  # UID 11: below the listed 1000000, above the cursor
    server.mailbox.append(later)
    api.post(f"/connections/{cid}/poll")
    wait_until(lambda: db.message_count() == 8, timeout_s=60, message="the later mail stored")
    assert later in {bytes(r.raw) for r in db.rows("SELECT raw FROM messages")}
