"""Every record's CloudEvents headers: readable by the CloudEvents SDK's Kafka binding, and the
same for the same event however often it is published."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from mailintake_shared.cloudevents import (
    KINDS,
    REPLAY,
    EventKind,
    headers,
    relayed_headers,
    source,
    split_topic,
    tombstone_headers,
)
from mailintake_shared.events import (
    ConnectionHealthChanged,
    ConnectionState,
    Event,
    MailStored,
    SmimeInfo,
    decode,
)
from mailintake_shared.topics import Topic, topic_name
from tests.harness.contracts import examples

PREFIX = "acme-mail."


def _example(kind: EventKind) -> Event:
    assert kind.model is not None
    return decode(kind.model, json.dumps(examples()[kind.ce_type]).encode())


@pytest.mark.parametrize(
    "kind", [k for k in KINDS if k.model is not None], ids=lambda kind: kind.name
)
def test_every_event_reads_back_through_the_cloudevents_kafka_binding(kind: EventKind) -> None:
    event = _example(kind)
    found = dict(headers(event, PREFIX))
    data = event.to_bytes()
    value = b"raw message bytes" if kind.content_type == "application/octet-stream" else data
    read = from_binary(KafkaMessage(found, b"key", value), JSONFormat())
    assert read.get_type() == kind.ce_type
    assert read.get_source().startswith("/acme-mail/")
    assert read.get_source().rsplit("/", 1)[1] in kind.producers
    assert read.get_id() == kind.identity(event)
    assert read.get_attributes()["datacontenttype"] == kind.content_type
    if kind.time_field is not None:  # ce_time is the event's own time, as the value writes it
        path = kind.time_field.split(".")
        written = json.loads(data)
        for name in path:
            written = written[name]
        assert found["ce_time"].decode() == written
        assert read.get_time() == datetime.fromisoformat(written)


def test_the_same_event_has_the_same_id_and_a_decrypted_announcement_another() -> None:
    kind = next(k for k in KINDS if k.model is MailStored)
    stored = _example(kind)
    assert isinstance(stored, MailStored)
    again = decode(MailStored, stored.to_bytes())
    assert headers(again, PREFIX) == headers(stored, PREFIX)
    opened = stored.model_copy(
        update={"smime": SmimeInfo(encrypted=True, decrypted_with=UUID(int=7))}
    )
    assert dict(headers(opened, PREFIX))["ce_id"] == f"{stored.message_id}/decrypted".encode()
    unopened = stored.model_copy(update={"smime": SmimeInfo(encrypted=True, problem="no key")})
    assert dict(headers(unopened, PREFIX))["ce_id"] == str(stored.message_id).encode()


def test_a_replay_keeps_the_id_and_says_so() -> None:
    stored = _example(next(k for k in KINDS if k.model is MailStored))
    first, replayed = dict(headers(stored, PREFIX)), dict(headers(stored, PREFIX, replay=True))
    assert REPLAY not in first
    assert replayed.pop(REPLAY) == b"true"
    assert replayed == first


def test_outbox_records_get_their_headers_from_the_row_alone() -> None:
    state = _example(next(k for k in KINDS if k.model is ConnectionState))
    assert isinstance(state, ConnectionState)
    name = topic_name(PREFIX, Topic.CONNECTIONS)
    key = str(state.connection.id)
    queued = datetime(2026, 11, 24, 7, 3, 28, tzinfo=UTC)
    relayed = relayed_headers(name, key, state.to_bytes(), queued)
    assert relayed == headers(state, PREFIX)
    assert relayed == relayed_headers(name, key, state.to_bytes(), datetime.now(UTC))

    deleted = dict(relayed_headers(name, key, None, queued))
    assert deleted == dict(tombstone_headers(PREFIX, key, queued))
    assert deleted["ce_type"] == b"mailintake.connection.deleted.v1"
    assert deleted["ce_id"] == f"{key}/deleted".encode()
    assert deleted["ce_time"] == b"2026-11-24T07:03:28Z"
    assert "content-type" not in deleted  # a tombstone has no data

    with pytest.raises(ValueError, match="schema_version"):
        relayed_headers(name, key, b'{"schema_version": 9}', queued)
    with pytest.raises(ValueError, match="not a mailintake topic"):
        relayed_headers("elsewhere", key, state.to_bytes(), queued)


def test_the_source_names_the_deployment_by_its_topic_prefix() -> None:
    assert source("mailintake.", "store") == "/mailintake/store"
    assert source("acme mail.", "store") == "/acme%20mail/store"
    assert source("", "scheduler") == "/mailintake/scheduler"
    assert split_topic("acme-mail.poll.completed") == ("acme-mail.", Topic.POLL_COMPLETED)
    assert split_topic("mail.stored") == ("", Topic.MAIL_STORED)


def test_the_two_instants_of_a_repeated_wall_clock_hour_keep_their_own_time_and_id() -> None:
    """01:30 in New York on the night clocks go back is two instants an hour apart (``fold``;
    they compare equal within their zone): each keeps its own ``ce_time`` and ``ce_id``, in
    whichever order they are published."""
    zone = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    example = _example(next(k for k in KINDS if k.model is ConnectionHealthChanged))
    texts = {}
    for at in (first, second, first):
        event = example.model_copy(update={"at": at})
        found = dict(headers(event, PREFIX))
        texts[at.fold] = (found["ce_time"], found["ce_id"])
    assert texts[0][0] == b"2026-11-01T05:30:00Z"
    assert texts[1][0] == b"2026-11-01T06:30:00Z"
    assert texts[0][1] != texts[1][1]
