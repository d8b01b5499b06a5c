"""Testing a connection step by step, and enabling with the estimate acknowledged, against
real Dovecot (IMAP and POP3), PostgreSQL and the broker."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailintake_devstack.broker import free_port
from mailintake_shared.settings import Settings
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.planted import planted
from tests.integration.conftest import imap_connection_body
from tests.integration.test_fetcher_pop3 import NoUidlHandler
from tests.integration.test_pipeline_pop3 import pop3_body

pytestmark = pytest.mark.integration
WRONG_PASSWORD = planted("wrong-password")


def check(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/connections/test", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert body.get("password", "") not in response.text
    return result


@pytest.fixture(scope="module")
def plain_only_dovecot() -> Iterator[Dovecot]:
    server = Dovecot(tls=False).start()
    yield server
    server.destroy()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_good_connection_reports_greeting_capabilities_and_count(
    api: TestClient, mailbox: Mailbox, protocol: str
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(3)))
    extra = pop3_body(mailbox) if protocol == "pop3" else {}
    result = check(api, imap_connection_body(mailbox, **extra))
    assert result["ok"] is True, result
    assert result["failed_step"] is None
    assert result["messages"] == 3
    assert "Dovecot" in result["greeting"]
    wanted = "UIDL" if protocol == "pop3" else "IMAP4REV1"
    assert wanted in [c.upper() for c in result["capabilities"]]
    assert [s["name"] for s in result["steps"]] == ["dns", "connect", "session"]
    assert result["latency_ms"] > 0


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_each_failing_step_is_reached_and_named(
    api: TestClient, mailbox: Mailbox, plain_only_dovecot: Dovecot, protocol: str
) -> None:
    pop3 = protocol == "pop3"
    base = imap_connection_body(mailbox, **(pop3_body(mailbox) if pop3 else {}))
    plain_user, plain_password = plain_only_dovecot.add_user()
    plain_port = plain_only_dovecot.ports.pop3 if pop3 else plain_only_dovecot.ports.imap
    cases: dict[str, dict[str, Any]] = {
        "connection_refused": {**base, "port": free_port()},
        "authentication": {**base, "password": WRONG_PASSWORD},
        "tls": {**base, "tls_ca_pem": None},
        "starttls_unavailable": {
            **base,
            "port": plain_port,
            "encryption": "starttls",
            "tls_ca_pem": None,
            "username": plain_user,
            "password": plain_password,
        },
    }
    if not pop3:
        cases["folder_missing"] = {**base, "folder": "Nope"}
    for step, body in cases.items():
        result = check(api, body)
        assert (result["ok"], result["failed_step"]) == (False, step), result
        assert WRONG_PASSWORD not in (result["error"] or "")
    tls = check(api, cases["tls"])
    assert "certificate" in tls["error"]
    assert [s["name"] for s in tls["steps"]] == ["dns", "connect"]


@pytest.mark.parametrize("encryption", ["none", "ssl"])
def test_a_silent_server_times_out_after_the_connections_time_out(
    api: TestClient, mailbox: Mailbox, encryption: str
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    body = imap_connection_body(
        mailbox, port=listener.getsockname()[1], encryption=encryption, timeout_ms=2000
    )
    if encryption == "none":
        body["tls_ca_pem"] = None
    started = time.monotonic()
    result = check(api, body)
    elapsed = time.monotonic() - started
    listener.close()
    assert result["failed_step"] == "timeout", result
    # Not before the time-out, and not at some OS default (a minute or more) after it: the
    # bound leaves room for a busy machine, where a tighter one failed now and then.
    assert 2000 <= result["latency_ms"] <= 5000, result
    assert 2.0 <= elapsed <= 8.0, elapsed


def test_a_saved_connection_is_tested_with_its_stored_password(
    api: TestClient, mailbox: Mailbox
) -> None:
    created = api.post("/connections", json=imap_connection_body(mailbox)).json()
    result = api.post(f"/connections/{created['id']}/test").json()
    assert result["ok"] is True, result
    assert mailbox.password not in str(result)


def test_a_name_that_does_not_resolve_fails_at_dns(
    api: TestClient, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No resolver is asked (tests stay on loopback): the lookup itself is made to fail.
    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    result = check(api, imap_connection_body(mailbox, host="mail.example.invalid"))
    assert result["failed_step"] == "dns"
    assert result["error"].startswith("mail.example.invalid does not resolve")


# --- enabling with an estimate ------------------------------------------------------------


def _enable(api: TestClient, cid: str, ack: int | None = None) -> Any:
    body = {} if ack is None else {"acknowledge_messages": ack}
    return api.post(f"/connections/{cid}/enable", json=body)


def _estimate_then_enable(api: TestClient, cid: str, expected: int) -> None:
    """The acknowledgement rule: 409 with the estimate until the request acknowledges it."""
    refused = _enable(api, cid)
    assert refused.status_code == 409, refused.text
    estimate = refused.json()["estimate"]
    assert (estimate["messages"], estimate["confidence"]) == (expected, "exact")
    too_few = _enable(api, cid, expected - 1)
    assert too_few.status_code == 409
    assert too_few.json()["detail"] == (  # the number to acknowledge, said
        f"acknowledge_messages {expected - 1} is fewer than the {expected} messages; "
        f'repeat with {{"acknowledge_messages": {expected}}} to enable'
    )
    assert api.get(f"/connections/{cid}").json()["enabled"] is False
    enabled = _enable(api, cid, expected + 5)  # a larger number is fine too
    assert enabled.status_code == 200
    assert enabled.json()["first_poll"] == "at once (requested with the enabling), then every 1 min"
    assert api.get(f"/connections/{cid}").json()["enabled"] is True


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_the_estimate_is_what_the_first_poll_downloads(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox, protocol: str
) -> None:
    extra = pop3_body(mailbox) if protocol == "pop3" else {}
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(12)))
    pipeline.start("scheduler", "fetcher", "store")
    cid = api.post("/connections", json=imap_connection_body(mailbox, **extra)).json()["id"]
    assert api.get(f"/connections/{cid}").json()["enabled"] is False

    _estimate_then_enable(api, cid, 12)  # a new mailbox: everything
    wait_until(lambda: db.message_count() >= 12, timeout_s=60, message="first sync")

    # A known mailbox, re-enabled after new mail arrived: only the new ones.
    assert api.post(f"/connections/{cid}/disable").status_code == 200
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(100, 104)))
    _estimate_then_enable(api, cid, 4)
    wait_until(lambda: db.message_count() >= 16, timeout_s=60, message="the 4 new ones")
    time.sleep(2)
    assert db.message_count() == 16
    fetched = db.scalar("SELECT coalesce(sum(fetched), 0) FROM poll_log")
    assert fetched == 16  # downloads, not only stored rows: exactly the two estimates
    pipeline.assert_running()


def test_nothing_to_download_enables_at_once_and_first_sync_none_starts_now(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(5)))
    pipeline.start("scheduler", "fetcher", "store")
    body = imap_connection_body(mailbox, first_sync="none")
    cid = api.post("/connections", json=body).json()["id"]
    assert _enable(api, cid).status_code == 200  # estimate 0: no acknowledgement needed
    mailbox.server.seed(mailbox.username, [make_message(50)])
    assert api.post(f"/connections/{cid}/poll").status_code == 202
    wait_until(lambda: db.message_count() >= 1, timeout_s=60, message="the new message")
    time.sleep(2)
    subjects = [r.subject for r in db.rows("SELECT subject FROM messages")]
    assert subjects == ["Request 50"]


def test_the_threshold_setting_lets_small_mailboxes_through(
    pipeline_settings: Settings, mailbox: Mailbox
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(5)))
    settings = pipeline_settings.model_copy(update={"enable_ack_threshold": 5})
    with api_client(settings) as api:
        small = api.post("/connections", json=imap_connection_body(mailbox)).json()["id"]
        assert _enable(api, small).status_code == 200
        mailbox.server.seed(mailbox.username, [make_message(9)])
        other = api.post("/connections", json=imap_connection_body(mailbox)).json()["id"]
        refused = _enable(api, other)
        assert refused.status_code == 409
        assert refused.json()["estimate"]["messages"] == 6


def test_an_unreachable_server_cannot_be_enabled_without_saying_so(
    api: TestClient, mailbox: Mailbox
) -> None:
    cid = api.post("/connections", json=imap_connection_body(mailbox, port=free_port())).json()[
        "id"
    ]
    failed = _enable(api, cid)
    assert failed.status_code == 502
    assert failed.json()["test"]["failed_step"] == "connection_refused"
    assert api.get(f"/connections/{cid}").json()["enabled"] is False
    forced = api.post(f"/connections/{cid}/enable", json={"skip_estimate": True})
    assert forced.status_code == 200
    assert forced.json()["enabled"] is True


def test_a_pop3_server_without_uidl_is_refused_at_test_time(
    api: TestClient, mailbox: Mailbox
) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), NoUidlHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = imap_connection_body(
            mailbox, **pop3_body(mailbox), encryption="none", tls_ca_pem=None
        )
        body["port"] = server.server_address[1]
        result = check(api, body)
    finally:
        server.shutdown()
        server.server_close()
    assert (result["ok"], result["failed_step"]) == (False, "uidl_unsupported")
    assert "UIDL" in result["error"]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_unicode_password_is_accepted_and_signs_in(
    api: TestClient, dovecot: Dovecot, protocol: str
) -> None:
    """Any text without control characters: the API keeps it, and the login carries it as
    UTF-8 through SASL PLAIN (IMAP AUTHENTICATE, POP3 AUTH)."""
    username, password = dovecot.add_user(password="Grüße-Kennwort-2026 ✓ 密码")
    box = Mailbox(dovecot, username, password)
    extra = pop3_body(box) if protocol == "pop3" else {}
    result = check(api, imap_connection_body(box, **extra))
    assert result["ok"] is True, result
    created = api.post("/connections", json=imap_connection_body(box, **extra))
    assert created.status_code == 201, created.text
    saved = api.post(f"/connections/{created.json()['id']}/test").json()
    assert saved["ok"] is True, saved
