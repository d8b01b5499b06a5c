"""Every kind of record an end-to-end run produces matches the committed contracts
(docs/schemas/, docs/asyncapi.json, docs/topics.md), with CloudEvents headers that stay the
same when the outbox is relayed again after a crash or an operator replays; and a consumer
written from those documents alone reads every topic, routing on ``ce_type``."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from kafka.consumer.fetcher import ConsumerRecord

from mailintake_devstack.broker import free_port
from mailintake_shared.contracts.asyncapi import asyncapi_document
from mailintake_shared.kafka import ReliableProducer, read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name
from tests.api import WITHOUT_ESTIMATE
from tests.conftest import Mailbox
from tests.harness.contracts import ASYNCAPI, documented_fields, field_paths, schema, strict
from tests.harness.downstream import Downstream
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import create_enabled, imap_connection_body

pytestmark = pytest.mark.integration

MESSAGES = ASYNCAPI["components"]["messages"]
EVERY_TYPE = set(MESSAGES)
# The relays' transactions fail after the broker took their records: a crash between the
# publish and the commit, as often as the trigger stays.
CRASH = """
CREATE FUNCTION crash_before_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'the relay crashed before its commit'; END $$;
CREATE TRIGGER crash_before_commit BEFORE DELETE ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION crash_before_commit();
"""
# The store's writes of mail refused for a while, so that it says the mail waits for it.
REFUSE_MAIL = """
CREATE FUNCTION refuse_mail() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;
CREATE TRIGGER refuse_mail BEFORE INSERT ON messages
  FOR EACH STATEMENT EXECUTE FUNCTION refuse_mail();
"""


@pytest.fixture
def pipeline_settings(pipeline_settings: Settings) -> Settings:
    """Chunked mail and a quick watchdog, so that every kind of record appears."""
    return pipeline_settings.model_copy(
        update={"chunk_bytes": 64 * 1024, "stalled_after_seconds": 4.0}
    )


def _every_kind(settings: Settings) -> dict[Topic, list[ConsumerRecord]] | None:
    """Every topic's records, once every kind of record is among them."""
    records = {topic: read_topic_to_end(settings, topic) for topic in Topic}
    return records if _types(records) >= EVERY_TYPE else None


def _types(records: dict[Topic, list[ConsumerRecord]]) -> set[str]:
    return {
        dict(r.headers).get("ce_type", b"").decode() for found in records.values() for r in found
    }


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def _check(record: ConsumerRecord, prefix: str) -> None:
    """One record against the contract: headers, key, value, and the docs' field tables."""
    found = _headers(record)
    ce_type = found["ce_type"]
    message = MESSAGES[ce_type]
    topic = record.topic.removeprefix(prefix)
    assert ce_type in ASYNCAPI["channels"][topic]["messages"], (topic, ce_type)
    checker = FormatChecker()
    Draft202012Validator(strict(message["headers"]), format_checker=checker).validate(found)
    key = record.key.decode() if record.key is not None else None
    Draft202012Validator(message["bindings"]["kafka"]["key"], format_checker=checker).validate(key)
    if record.value is None:
        assert message["payload"]["type"] == "null"
        return
    if message.get("contentType") == "application/octet-stream":
        value = json.loads(found["mailintake-envelope"])
    else:
        value = json.loads(record.value)
    document = schema(ce_type)
    Draft202012Validator(strict(document), format_checker=checker).validate(value)
    undocumented = field_paths(value, document, document.get("$defs", {})) - documented_fields(
        ce_type
    )
    assert not undocumented, f"{ce_type}: fields docs/topics.md does not list: {undocumented}"
    if "connection_id" in value:
        assert value["connection_id"] == key


def test_every_record_of_a_run_matches_the_contracts_and_a_downstream_consumer_reads_them(
    pipeline: Pipeline,
    api: TestClient,
    db: Database,
    mailbox: Mailbox,
    pipeline_settings: Settings,
) -> None:
    settings, prefix = pipeline_settings, pipeline_settings.topic_prefix
    db.execute(CRASH)
    db.execute(REFUSE_MAIL)
    large = make_message(1, size=200_000)  # several chunks of 64 KiB
    mailbox.server.seed(mailbox.username, [large, *(make_message(i) for i in range(2, 6))])
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(api, mailbox)
    wait_until(
        lambda: any(r.value for r in read_topic_to_end(settings, Topic.STORE_WAITING)),
        timeout_s=120,
        message="the store says the mail waits for it",
    )
    db.execute("DROP TRIGGER refuse_mail ON messages")
    wait_until(lambda: db.message_count() == 5, timeout_s=120, message="mail stored")
    wait_until(
        lambda: len(read_topic_to_end(settings, Topic.MAIL_STORED)) >= 10,
        timeout_s=60,
        message="each mail.stored record published twice, the relay crashing after the broker",
    )
    db.execute("DROP TRIGGER crash_before_commit ON outbox")
    wait_until(lambda: db.scalar("SELECT count(*) FROM outbox") == 0, timeout_s=60)

    assert api.patch(f"/connections/{connection_id}", json={"interval_minutes": 2}).is_success
    assert api.post(f"/connections/{connection_id}/poll").status_code == 202
    replayed = api.post(
        f"/connections/{connection_id}/replay", json={"since": "2000-01-01T00:00:00Z"}
    )
    assert replayed.json()["messages"] == 5, replayed.text
    producer = ReliableProducer(settings, "test")
    fetched, bad_key = topic_name(prefix, Topic.MAIL_FETCHED), str(uuid.uuid4()).encode()
    producer.settle([producer.send(fetched, bad_key, b"{not json")])  # no headers: foreign
    producer.close()
    refused = imap_connection_body(mailbox, port=free_port())  # nothing listens there
    failing = api.post("/connections", json=refused).json()["id"]
    api.post(f"/connections/{failing}/enable", json=WITHOUT_ESTIMATE)
    wait_until(
        lambda: _types(
            {Topic.CONNECTION_HEALTH: read_topic_to_end(settings, Topic.CONNECTION_HEALTH)}
        ),
        timeout_s=60,
        message="the failing connection reported stalled",
    )
    assert api.delete(f"/connections/{failing}").status_code == 204
    records = wait_until(
        lambda: _every_kind(settings), timeout_s=60, message=f"every one of {sorted(EVERY_TYPE)}"
    )

    for found in records.values():
        for record in found:
            if record.key != bad_key:  # the test's own bad record, dead-lettered
                _check(record, prefix)
    _check_the_same_event_keeps_its_headers(records)

    served = api.get("/asyncapi.json", headers={"Authorization": ""})
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(asyncapi_document(prefix)))
    assert served.json()["components"]["parameters"]["prefix"]["default"] == prefix

    downstream = Downstream(ASYNCAPI, settings.kafka_bootstrap_servers, prefix, f"{prefix}dn")
    downstream.run(lambda d: set(d.seen) >= EVERY_TYPE, timeout_s=90)
    assert downstream.surprises == [f"{fetched}: a record of no known ce_type ({{}})"]
    stored = downstream.events["mailintake.mail.stored.v1"]
    assert len({event.get_data()["message_id"] for event in stored}) == 5
    assert {e.get_extension("replay") for e in stored} == {None, "true"}
    pipeline.assert_running()


def _check_the_same_event_keeps_its_headers(records: dict[Topic, list[ConsumerRecord]]) -> None:
    """Relayed twice (the crash) or replayed, an event keeps ``ce_id`` and ``ce_time``; a
    replay says so, a relay after a crash does not."""
    announcements: defaultdict[int, list[dict[str, str]]] = defaultdict(list)
    for record in records[Topic.MAIL_STORED]:
        announcements[json.loads(record.value)["message_id"]].append(_headers(record))
    assert len(announcements) == 5
    for message_id, published in announcements.items():
        first = [h for h in published if "ce_replay" not in h]
        replays = [h for h in published if h.get("ce_replay") == "true"]
        assert len(first) >= 2, f"message {message_id}: relayed once only, the crash missed it"
        assert len(replays) == 1
        assert all(h == first[0] for h in first)
        assert {k: v for k, v in replays[0].items() if k != "ce_replay"} == first[0]
        assert first[0]["ce_id"] == str(message_id)
    states: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
    for record in records[Topic.CONNECTIONS]:
        headers = _headers(record)
        states[headers["ce_id"]].add((headers["ce_time"], headers["ce_type"]))
    assert all(len(variants) == 1 for variants in states.values()), states
    assert any(ce_id.endswith("/deleted") for ce_id in states)
    # the resync and the crash published some states more than once: one id for each version
    versions = {
        (value["connection"]["id"], value["connection"]["version"])
        for record in records[Topic.CONNECTIONS]
        if record.value is not None and (value := json.loads(record.value))
    }
    assert len(versions) == len(states) - 1


def test_the_served_document_needs_no_token_like_openapi(api: TestClient) -> None:
    anonymous = {"Authorization": ""}
    assert api.get("/openapi.json", headers=anonymous).status_code == 200
    assert api.get("/asyncapi.json", headers=anonymous).status_code == 200
    assert api.get("/connections", headers=anonymous).status_code == 401
