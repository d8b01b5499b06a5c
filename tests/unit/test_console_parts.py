"""The web console's parts that need no server: sealed sessions, the connection form's
fields per protocol and its API body, and a connection test worded as steps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from scripts.vendor_htmx import committed_is_pinned

from mailintake_config_api.audit import _field_names
from mailintake_config_api.auth import Role, TokenTable, hash_token
from mailintake_config_api.console.forms import ConnectionForm, fields_for
from mailintake_config_api.console.session import Sessions
from mailintake_config_api.console.views import health, steps_of
from mailintake_config_api.schemas import (
    ConnectionHealth,
    ConnectionPublic,
    ConnectionTestResult,
    ProbeStep,
)
from mailintake_shared.domain import Protocol, Transport
from mailintake_shared.secretbox import SecretBox, generate_key
from mailintake_shared.settings import Settings

SETTINGS = Settings(google_imap_hosts="imap.gmail.com")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_opens_only_with_our_keys_until_it_expires_or_ends() -> None:
    clock = Clock()
    sessions = Sessions(SecretBox([generate_key()]), lifetime_s=60, clock=clock)
    token = "viewer-token-of-32-characters-00"  # too long to appear in random base64 by chance
    table = TokenTable([f"viewer:{hash_token(token)}"])
    session = sessions.signed_in(token)
    cookie = sessions.seal(vars(session))
    assert token not in cookie
    assert hash_token(token) not in cookie
    opened = sessions.read(cookie)
    assert opened == session
    assert sessions.role(session, table) is Role.VIEWER
    assert sessions.role(session, TokenTable([])) is None  # the token was removed

    other = Sessions(SecretBox([generate_key()]), lifetime_s=60, clock=clock)
    assert other.read(cookie) is None
    assert sessions.read(cookie[:-4] + "AAAA") is None
    assert sessions.read("not base64 at all!") is None
    assert sessions.read(sessions.seal(["a", "list"])) is None

    clock.now += 61
    assert sessions.read(cookie) is None
    clock.now -= 61
    sessions.end(session)
    assert sessions.read(cookie) is None
    assert sessions.signed_in("tok").csrf != session.csrf


def test_the_form_shows_each_protocols_fields() -> None:
    imap = fields_for(Protocol.IMAP, None, SETTINGS)
    pop3 = fields_for(Protocol.POP3, None, SETTINGS)
    graph = fields_for(Protocol.MICROSOFT_OAUTH2, Transport.GRAPH, SETTINGS)
    microsoft_imap = fields_for(Protocol.MICROSOFT_OAUTH2, Transport.IMAP, SETTINGS)
    google = fields_for(Protocol.GOOGLE_OAUTH2, None, SETTINGS)
    assert {"host", "port", "folder", "password", "first_sync", "push"} <= imap
    assert {"host", "port", "password"} <= pop3
    assert not {"folder", "first_sync", "shared_mailbox", "oauth_credential_id", "push"} & pop3
    assert {"oauth_credential_id", "transport", "shared_mailbox", "push"} <= graph
    assert not {"host", "port", "folder", "password", "first_sync"} & graph
    assert {"host", "folder"} <= microsoft_imap
    assert "port" not in microsoft_imap
    assert "host" not in google  # one allowed host: nothing to choose
    assert "password" not in google


def test_the_forms_body_is_the_apis_and_an_update_clears_what_the_protocol_drops() -> None:
    values = {
        "name": " Box ",
        "protocol": "pop3",
        "host": "pop.example.com",
        "port": "",
        "folder": "Archive",  # typed before the protocol changed to POP3
        "tls_verify": "",
        "shared": "",
        "shared_mailbox": "team@example.com",
        "username": "u",
        "password": "never kept in the form",
    }
    form = ConnectionForm.of(values, SETTINGS)
    assert "password" not in form.values
    created = form.body("pw", update=False)
    assert created == {
        "name": "Box",
        "protocol": "pop3",
        "host": "pop.example.com",
        "tls_verify": False,
        "username": "u",
        "shared_mailbox": None,
        "password": "pw",
    }
    updated = form.body("", update=True)
    assert updated["folder"] is None
    assert updated["first_sync"] is None
    assert updated["port"] is None
    assert "password" not in updated  # blank: the stored one is kept
    assert form.default_port == "995"
    assert ConnectionForm.of({**values, "encryption": "none"}, SETTINGS).default_port == "110"


def _connection(**overrides: object) -> ConnectionPublic:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "version": 1,
        "name": "Box",
        "description": None,
        "protocol": Protocol.IMAP,
        "transport": Transport.IMAP,
        "oauth_credential_id": None,
        "encryption": "ssl",
        "host": "imap.example.com",
        "port": None,
        "tls_verify": True,
        "tls_ca_pem": None,
        "interval_minutes": 5,
        "timeout_ms": 30000,
        "folder": None,
        "username": "u@example.com",
        "shared_mailbox": None,
        "after_download": "mark_seen",
        "enabled": True,
        "created_at": datetime.now(UTC),
        "updated_at": datetime.now(UTC),
        "has_password": True,
    }
    fields.update(overrides)
    return ConnectionPublic.model_validate(fields)


def test_a_test_is_shown_as_ticks_up_to_the_failing_step_and_its_advice() -> None:
    box = _connection()
    passed = ConnectionTestResult(
        ok=True,
        messages=1234,
        latency_ms=5,
        steps=[ProbeStep(name=n, ok=True, milliseconds=1) for n in ("dns", "connect", "session")],
    )
    shown = steps_of(passed, box)
    assert [s.state for s in shown] == ["ok"] * 5
    assert shown[-1].detail == "1,234 messages"
    assert shown[1].label == "Connect to port 993"

    refused = ConnectionTestResult(
        ok=False,
        failed_step="authentication",
        error="the server refused the sign-in: check the username and password",
        latency_ms=5,
        steps=[
            ProbeStep(name="dns", ok=True, milliseconds=1),
            ProbeStep(name="connect", ok=True, milliseconds=1),
            ProbeStep(name="session", ok=False, milliseconds=1),
        ],
    )
    shown = steps_of(refused, box)
    assert [s.state for s in shown] == ["ok", "ok", "ok", "failed", "skipped"]
    assert shown[3].detail == refused.error

    timed_out = refused.model_copy(
        update={
            "failed_step": "timeout",
            "steps": [ProbeStep(name="dns", ok=False, milliseconds=1)],
        }
    )
    plain = steps_of(timed_out, _connection(encryption="none"))
    assert [s.state for s in plain] == ["failed", "skipped", "skipped", "skipped"]


def test_health_says_what_is_wrong_first() -> None:
    assert health(_connection()).key == "new"
    failing = ConnectionHealth(
        last_poll_at=datetime.now(UTC), consecutive_failures=2, last_error="login refused"
    )
    assert health(_connection(status=failing)).detail == "login refused (2 failed poll(s) in a row)"
    stalled = failing.model_copy(update={"stalled": True})
    assert health(_connection(status=stalled)).key == "stalled"
    assert health(_connection(enabled=False, status=stalled)).key == "disabled"
    oauth = _connection(protocol="google_oauth2", authorization="authorization_required")
    assert health(oauth).label == "authorization required"


def test_the_committed_htmx_is_the_pinned_release() -> None:
    assert committed_is_pinned()


def test_the_audit_log_names_a_forms_fields_and_never_reads_other_bodies_as_forms() -> None:
    form = _field_names(b"name=Box&password=s3cret&csrf=t&description=", form=True)
    assert form == '["description", "name", "password"]'
    assert _field_names(b'{"password": "s3cret"', form=False) is None  # malformed JSON
    assert _field_names(b"password=s3cret", form=False) is None
    assert _field_names(b'{"name": "x"}', form=False) == '["name"]'
