from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailintake_shared.domain import ConnectionView
from mailintake_shared.events import ConnectionState, decode
from mailintake_shared.topics import TOPIC_SPECS, Topic
from tests.harness.views import connection_view


def _view() -> ConnectionView:
    return connection_view(version=3)


def test_connection_state_round_trips_with_its_schema_version() -> None:
    event = ConnectionState(connection=_view())
    raw = event.to_bytes()
    assert b'"schema_version":1' in raw
    assert decode(ConnectionState, raw) == event


def test_unknown_schema_version_and_unknown_fields_are_rejected() -> None:
    raw = ConnectionState(connection=_view()).to_bytes()
    with pytest.raises(ValidationError):
        decode(ConnectionState, raw.replace(b'"schema_version":1', b'"schema_version":2'))
    with pytest.raises(ValidationError):
        decode(ConnectionState, raw[:-1] + b',"password":"x"}')


def test_only_the_topics_of_latest_states_are_compacted() -> None:
    compacted = {s.topic for s in TOPIC_SPECS if s.compacted}
    assert compacted == {Topic.CONNECTIONS, Topic.CONNECTION_HEALTH, Topic.STORE_WAITING}
    assert {s.topic for s in TOPIC_SPECS} == set(Topic)
    spec = next(s for s in TOPIC_SPECS if s.topic is Topic.CONNECTIONS)
    assert spec.configs() == {"cleanup.policy": "compact"}
