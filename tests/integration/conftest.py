"""Fixtures for tests that run the whole pipeline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.settings import Settings
from tests.api import api_client, enable
from tests.harness.mailserver import ServerMailbox
from tests.harness.mailserver import imap_session as imap_session  # re-exported
from tests.harness.pipeline import Database, Pipeline


@pytest.fixture
def pipeline_settings(settings: Settings) -> Settings:
    """Settings that make the pipeline quick to observe: no jitter, short budgets."""
    return settings.model_copy(
        update={
            "poll_jitter_seconds": 0.0,
            "poll_timeout_seconds": 20.0,
            "poll_max_seconds": 5.0,
            "retry_base_seconds": 1.0,
            "kafka_max_poll_interval_ms": 6000,
        }
    )


@pytest.fixture
def pipeline(pipeline_settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    running = Pipeline(pipeline_settings, tmp_path / "logs")
    yield running
    running.stop_all()


@pytest.fixture
def api(pipeline_settings: Settings) -> Iterator[TestClient]:
    with api_client(pipeline_settings) as client:
        yield client


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def imap_connection_body(mailbox: ServerMailbox, **overrides: Any) -> dict[str, Any]:
    server = mailbox.server
    body: dict[str, Any] = {
        "name": f"mailbox {uuid.uuid4().hex[:6]}",
        "protocol": "imap",
        "host": "127.0.0.1",
        "port": server.ports.imaps,
        "encryption": "ssl",
        "tls_ca_pem": server.pki.ca_text,
        "username": mailbox.username,
        "password": mailbox.password,
        "interval_minutes": 1,
    }
    body.update(overrides)
    return body


def create_enabled(api: TestClient, mailbox: ServerMailbox, **overrides: Any) -> str:
    created = api.post("/connections", json=imap_connection_body(mailbox, **overrides))
    assert created.status_code == 201, created.text
    connection_id: str = created.json()["id"]
    enabled = enable(api, connection_id)
    assert enabled.status_code == 200, enabled.text
    return connection_id


def server_flags(mailbox: ServerMailbox) -> tuple[int, int]:
    """(messages in INBOX, of which \\Seen)."""
    with imap_session(mailbox) as client:
        total = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
        seen = len(client.search(["SEEN"]))
    return total, seen


def drain(
    api: TestClient, connection_id: str, db: Database, expected: int, *, timeout_s: float
) -> None:
    """Ask for polls until ``expected`` messages are stored (a poll may have been lost)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.message_count() >= expected:
            return
        api.post(f"/connections/{connection_id}/poll")
        time.sleep(3)
    raise AssertionError(f"only {db.message_count()} of {expected} messages stored")
