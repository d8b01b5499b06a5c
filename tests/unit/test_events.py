from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from mailintake_shared.domain import AfterDownload, ConnectionView, Encryption, Protocol, Transport
from mailintake_shared.events import ConnectionState, decode
from mailintake_shared.topics import TOPIC_SPECS, Topic


def _view() -> ConnectionView:
    now = datetime.now(UTC)
    return ConnectionView(
        id=uuid.uuid4(),
        version=3,
        name="n",
        description=None,
        protocol=Protocol.IMAP,
        transport=Transport.IMAP,
        oauth_credential_id=None,
        encryption=Encryption.SSL,
        host="h",
        port=993,
        tls_verify=True,
        tls_ca_pem=None,
        interval_minutes=5,
        timeout_ms=30000,
        folder="INBOX",
        username="u",
        shared_mailbox=None,
        after_download=AfterDownload.MARK_SEEN,
        enabled=True,
        created_at=now,
        updated_at=now,
    )


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


def test_only_the_connections_topic_is_compacted() -> None:
    compacted = {s.topic for s in TOPIC_SPECS if s.compacted}
    assert compacted == {Topic.CONNECTIONS}
    assert {s.topic for s in TOPIC_SPECS} == set(Topic)
    spec = next(s for s in TOPIC_SPECS if s.topic is Topic.CONNECTIONS)
    assert spec.configs() == {"cleanup.policy": "compact"}
