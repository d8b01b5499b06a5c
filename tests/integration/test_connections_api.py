"""The connections API on PostgreSQL and the broker: rules, defaults, search, auth, events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from mailintake_config_api.app import create_app
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import Connection, OAuthCredential, PollLease
from mailintake_shared.db.queries import mailbox_config
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import ConnectionState
from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.api import ADMIN, VIEWER, WITHOUT_ESTIMATE, api_client, imap_body
from tests.harness.planted import WATCH
from tests.harness.planted import planted as plant

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with api_client(settings) as c:
        yield c


@pytest.fixture
def credential_id(settings: Settings) -> str:
    """An OAuth2 credential row for connections of the OAuth2 protocols to refer to."""
    engine = make_engine(settings)
    with make_session_factory(engine)() as session, session.begin():
        row = OAuthCredential(name="tenant app", provider="microsoft", client_id="cid")
        session.add(row)
        session.flush()
        cid = str(row.id)
    engine.dispose()
    return cid


def errors_of(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {e["field"]: e["rule"] for e in response.json()["errors"]}


# --- every attribute, valid and invalid ---------------------------------------------------

INVALID = [
    ({"name": ""}, "name", "name must be 1 to 255 characters"),
    ({"name": "x" * 256}, "name", "name must be 1 to 255 characters"),
    ({"protocol": "smtp"}, "protocol", "imap"),
    ({"encryption": "tls"}, "encryption", "starttls"),
    ({"host": None}, "host", "host is required for IMAP and POP3"),
    ({"host": "bad host/name"}, "host", "host must be a hostname or an IP address"),
    ({"port": 70000}, "port", "port must be between 1 and 65535"),
    ({"port": -1}, "port", "port must be between 1 and 65535"),
    ({"interval_minutes": 0}, "interval_minutes", "interval must be between 1 and 10080 minutes"),
    ({"timeout_ms": 30001}, "timeout_ms", "timeout must be between 1 and 30000 ms"),
    ({"timeout_ms": -5}, "timeout_ms", "timeout must be between 1 and 30000 ms"),
    ({"username": ""}, "username", "username must be 1 to 512 characters"),
    ({"password": "pw\r\nX1 CREATE INJECTED"}, "password", "without control characters"),
    ({"password": None}, "password", "password is required for IMAP and POP3"),
    ({"after_download": "archive"}, "after_download", "mark_seen"),
    ({"transport": "graph"}, "transport", "transport applies to microsoft_oauth2 only"),
    ({"oauth_credential_id": str(uuid.uuid4())}, "oauth_credential_id", "applies to the OAuth2"),
    ({"tls_ca_pem": "not a certificate"}, "tls_ca_pem", "PEM-encoded certificates"),
    ({"folder": "a\x01b"}, "folder", "without control characters"),
    # Nothing that reaches a mail server may end or split its command line (IMAP LOGIN, POP3
    # USER/PASS: a CR LF there sent a second command of the attacker's).
    ({"username": "support\r\nX1 CREATE INJECTED"}, "username", "(CR, LF, NUL"),
    ({"username": "u\nDELE 1"}, "username", "found U+000A"),
    ({"password": "pw\rDELE 1"}, "password", "found U+000D"),
    ({"password": "pw\x00"}, "password", "found U+0000"),
    ({"shared_mailbox": "s@example.com\r\nX2 LOGOUT"}, "shared_mailbox", "control characters"),
    ({"folder": "INBOX\r\nX3 DELETE INBOX"}, "folder", "control characters"),
    ({"folder": "IN\u0085BOX"}, "folder", "found U+0085"),  # C1 controls too
    # NUL anywhere is refused (PostgreSQL has no NUL in text: it was a 500).
    ({"name": "a\x00b"}, "name", "found U+0000"),
    ({"description": "line one\x00"}, "description", "found U+0000"),
    ({"tls_ca_pem": "-----BEGIN\x00"}, "tls_ca_pem", "found U+0000"),
    ({"enabled": True}, "enabled", "enable with POST /connections/{id}/enable"),
    ({"colour": "blue"}, "colour", "unknown field"),
]


@pytest.mark.parametrize(("change", "field", "rule"), INVALID)
def test_invalid_attribute_is_refused_naming_field_and_rule(
    client: TestClient, change: dict[str, Any], field: str, rule: str
) -> None:
    errors = errors_of(client.post("/connections", json=imap_body(**change)))
    assert field in errors
    assert rule in errors[field]


def test_any_unicode_password_without_control_characters_is_kept(
    client: TestClient, settings: Settings
) -> None:
    """SASL PLAIN carries UTF-8 (RFC 4616), so the password is any text a mail server takes;
    free text keeps its tabs and line breaks."""
    password = "Grüße-Kennwort-2026 ✓ 密码"
    created = client.post(
        "/connections", json=imap_body(password=password, description="two\r\nlines\tand a tab")
    )
    assert created.status_code == 201, created.text
    assert created.json()["description"] == "two\r\nlines\tand a tab"
    engine = make_engine(settings)
    with make_session_factory(engine)() as session:
        row = session.get(Connection, uuid.UUID(created.json()["id"]))
        assert row is not None
        config = mailbox_config(row, SecretBox(settings.encryption_keys))
    engine.dispose()
    assert config.password is not None
    assert config.password.get_secret_value() == password
    cid = created.json()["id"]
    assert "username" in errors_of(client.patch(f"/connections/{cid}", json={"username": "a\r\nb"}))


def test_nul_and_control_characters_are_a_422_everywhere(client: TestClient) -> None:
    """Search terms and filters, OAuth2 credentials, certificates and the OAuth2 callback:
    never a 500 (PostgreSQL refuses NUL in text; SQLite's LIKE stopped at it)."""
    client.post("/connections", json=imap_body())
    for path, param in [
        ("/connections", "q"),
        ("/certificates", "q"),
        ("/audit", "actor"),
        ("/log/polls", "outcome"),
        ("/log/messages", "outcome"),
    ]:
        for value in ("\x00", "a\x00", "\r\n"):
            refused = client.get(path, params={param: value})
            assert refused.status_code == 422, (path, value, refused.text)
            assert refused.json()["errors"][0]["field"] == param
    credential = {"name": "app", "provider": "microsoft", "client_id": "c", "client_secret": "s"}
    for field, value in [
        ("name", "a\x00"),
        ("client_id", "c\r\n"),
        ("tenant", "t\x00"),
        ("client_secret", "s\x00"),
    ]:
        assert field in errors_of(
            client.post("/oauth-credentials", json={**credential, field: value})
        )
    assert "scopes.0" in errors_of(
        client.post("/oauth-credentials", json={**credential, "scopes": ["a\x00"]})
    )
    certificate = {"name": "c\x00", "pem": "x"}
    assert "name" in errors_of(client.post("/certificates", json=certificate))
    callback = client.get("/oauth/callback", params={"state": "\x00", "code": "x"})
    assert callback.status_code == 400


def test_missing_required_fields_are_named(client: TestClient) -> None:
    errors = errors_of(client.post("/connections", json={}))
    assert set(errors) == {"name", "protocol", "username"}


def test_pop3_refuses_a_folder(client: TestClient) -> None:
    body = imap_body(protocol="pop3", folder="Archive")
    assert errors_of(client.post("/connections", json=body)) == {
        "folder": "folder applies to IMAP only"
    }


def test_first_sync_rules(client: TestClient) -> None:
    since = imap_body(first_sync="since")
    assert errors_of(client.post("/connections", json=since)) == {
        "first_sync_since": "first_sync_since is required with first_sync since, and only then"
    }
    pop3 = imap_body(protocol="pop3", first_sync="unseen")
    assert set(errors_of(client.post("/connections", json=pop3))) == {"first_sync"}
    good = client.post(
        "/connections", json=imap_body(first_sync="since", first_sync_since="2026-01-31")
    )
    assert good.status_code == 201, good.text
    assert (good.json()["first_sync"], good.json()["first_sync_since"]) == ("since", "2026-01-31")
    cleared = client.patch(
        f"/connections/{good.json()['id']}", json={"first_sync": "all", "first_sync_since": None}
    )
    assert cleared.json()["first_sync"] == "all"


def test_oauth_rules(client: TestClient, credential_id: str) -> None:
    google = {"name": "g", "protocol": "google_oauth2", "username": "a@gmail.com"}
    assert "oauth_credential_id" in errors_of(client.post("/connections", json=google))
    other_provider = {**google, "oauth_credential_id": credential_id}  # a Microsoft app
    assert (
        "provider"
        in errors_of(client.post("/connections", json=other_provider))["oauth_credential_id"]
    )
    google_app = client.post(
        "/oauth-credentials",
        json={"name": "gmail app", "provider": "google", "client_id": "c", "client_secret": "s"},
    )
    google_credential = google_app.json()["id"]
    errors = errors_of(
        client.post(
            "/connections",
            json={
                **google,
                "oauth_credential_id": google_credential,
                "password": "x",
                "host": "imap.evil.example",
                "encryption": "none",
            },
        )
    )
    assert set(errors) == {"password", "host", "encryption"}
    missing = {**google, "oauth_credential_id": str(uuid.uuid4())}
    assert (
        "must name a stored OAuth2 credential"
        in errors_of(client.post("/connections", json=missing))["oauth_credential_id"]
    )

    ok = client.post("/connections", json={**google, "oauth_credential_id": google_credential})
    assert ok.status_code == 201, ok.text
    assert ok.json() | {} == ok.json()
    assert (ok.json()["host"], ok.json()["port"], ok.json()["encryption"]) == (
        "imap.gmail.com",
        993,
        "ssl",
    )

    microsoft = {
        "name": "m",
        "protocol": "microsoft_oauth2",
        "username": "a@contoso.com",
        "oauth_credential_id": credential_id,
    }
    assert (
        "host must be one of"
        in errors_of(client.post("/connections", json={**microsoft, "host": "mail.contoso.com"}))[
            "host"
        ]
    )
    moved = client.post("/connections", json={**microsoft, "host": "outlook.office365.us"})
    assert moved.status_code == 201
    assert moved.json()["host"] == "outlook.office365.us"
    graph = client.post(
        "/connections",
        json={
            **microsoft,
            "name": "m2",
            "transport": "graph",
            "shared_mailbox": "helpdesk@contoso.com",
        },
    )
    assert graph.status_code == 201, graph.text
    assert (graph.json()["transport"], graph.json()["host"], graph.json()["port"]) == (
        "graph",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("protocol", "encryption", "port"),
    [
        ("imap", "ssl", 993),
        ("imap", "starttls", 143),
        ("imap", "none", 143),
        ("pop3", "ssl", 995),
        ("pop3", "starttls", 110),
        ("pop3", "none", 110),
    ],
)
def test_default_ports(client: TestClient, protocol: str, encryption: str, port: int) -> None:
    body = imap_body(protocol=protocol, encryption=encryption, port=0)
    created = client.post("/connections", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["port"] == port


def test_defaults_and_valid_values_are_kept(client: TestClient, dovecot: Any) -> None:
    created = client.post("/connections", json=imap_body(timeout_ms=0, folder="  "))
    assert created.status_code == 201
    shown = created.json()
    assert shown["timeout_ms"] == 30000
    assert shown["folder"] == "INBOX"
    assert shown["interval_minutes"] == 5
    assert shown["after_download"] == "mark_seen"
    assert shown["encryption"] == "ssl"
    assert shown["enabled"] is False
    assert shown["has_password"] is True
    explicit = client.post(
        "/connections",
        json=imap_body(
            name="Explicit",
            description="Orders",
            encryption="starttls",
            port=1143,
            timeout_ms=1,
            interval_minutes=10080,
            folder="Orders/2026",
            shared_mailbox="orders@example.com",
            after_download="delete",
            host="10.0.0.5",
            tls_verify=False,
            tls_ca_pem=dovecot.pki.ca_text,
        ),
    )
    assert explicit.status_code == 201, explicit.text
    got = explicit.json()
    assert (got["port"], got["timeout_ms"], got["interval_minutes"], got["folder"]) == (
        1143,
        1,
        10080,
        "Orders/2026",
    )
    assert (got["after_download"], got["tls_verify"], got["host"]) == ("delete", False, "10.0.0.5")


def test_push_is_on_by_default_and_its_watch_is_shown(client: TestClient) -> None:
    created = client.post("/connections", json=imap_body()).json()
    assert created["push"] == "auto"
    assert created["watch"] == {
        "watched": False,
        "state": "off",
        "method": None,
        "since": None,
        "reason": "the connection is disabled",
    }
    client.post(f"/connections/{created['id']}/enable", json=WITHOUT_ESTIMATE)
    enabled = client.get(f"/connections/{created['id']}").json()["watch"]
    assert (enabled["state"], enabled["watched"]) == ("unknown", False)  # no watcher runs
    assert "no watcher reports on it" in enabled["reason"]
    off = client.patch(f"/connections/{created['id']}", json={"push": "off"}).json()
    assert (off["push"], off["watch"]["state"]) == ("off", "off")
    bad = client.patch(f"/connections/{created['id']}", json={"push": "sometimes"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "push"


def test_names_are_unique_case_insensitively(client: TestClient) -> None:
    assert client.post("/connections", json=imap_body(name="Sales")).status_code == 201
    clash = client.post("/connections", json=imap_body(name="SALES"))
    assert clash.status_code == 409
    assert "SALES" in clash.json()["detail"]
    other = client.post("/connections", json=imap_body(name="Billing")).json()
    rename = client.patch(f"/connections/{other['id']}", json={"name": "sales"})
    assert rename.status_code == 409


def test_update_merges_and_revalidates(client: TestClient) -> None:
    created = client.post("/connections", json=imap_body()).json()
    url = f"/connections/{created['id']}"
    moved = client.patch(
        url,
        json={"protocol": "pop3", "encryption": "none", "folder": None, "password": "pop3-pw"},
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["port"], moved.json()["folder"], moved.json()["version"]) == (110, None, 2)
    assert moved.json()["has_password"] is True
    assert errors_of(client.patch(url, json={"timeout_ms": 999999})) == {
        "timeout_ms": "timeout must be between 1 and 30000 ms (0 or blank for 30000)"
    }
    assert client.patch(url, json={"name": None}).status_code == 422
    assert client.get(url).json()["version"] == 2


def test_search_over_each_field_and_stable_pages(client: TestClient) -> None:
    client.post("/connections", json=imap_body(name="Alpha Orders", username="a@one.example"))
    client.post(
        "/connections",
        json=imap_body(name="Beta", description="Invoices FROM suppliers", username="b@x.example"),
    )
    client.post("/connections", json=imap_body(name="Gamma", host="mail.Special-Host.example"))
    client.post("/connections", json=imap_body(name="Delta", username="Zed@Contoso.example"))

    def names(q: str) -> list[str]:
        page = client.get("/connections", params={"q": q}, headers=VIEWER)
        assert page.status_code == 200
        return [c["name"] for c in page.json()["items"]]

    assert names("ORDERS") == ["Alpha Orders"]  # name
    assert names("from supp") == ["Beta"]  # description
    assert names("special-host") == ["Gamma"]  # host
    assert names("zed@contoso") == ["Delta"]  # username
    assert names("%") == []  # LIKE wildcards are literal
    assert names("") == ["Alpha Orders", "Beta", "Delta", "Gamma"]

    first = client.get("/connections", params={"limit": 3, "offset": 0}).json()
    second = client.get("/connections", params={"limit": 3, "offset": 3}).json()
    assert first["total"] == second["total"] == 4
    assert [c["name"] for c in first["items"] + second["items"]] == [
        "Alpha Orders",
        "Beta",
        "Delta",
        "Gamma",
    ]


def test_auth_rules(settings: Settings) -> None:
    anonymous = TestClient(create_app(settings))
    WATCH.watch_client(anonymous)
    with anonymous as anon:
        assert anon.get("/connections").status_code == 401
        assert anon.get("/connections", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/connections", headers=VIEWER).status_code == 200
        refused = anon.post("/connections", json=imap_body(), headers=VIEWER)
        assert refused.status_code == 403
        created = anon.post("/connections", json=imap_body(), headers=ADMIN)
        assert created.status_code == 201
        cid = created.json()["id"]
        for method, path in [
            ("patch", f"/connections/{cid}"),
            ("delete", f"/connections/{cid}"),
            ("post", f"/connections/{cid}/enable"),
            ("post", f"/connections/{cid}/disable"),
        ]:
            kwargs: dict[str, Any] = {"json": {}} if method == "patch" else {}
            assert getattr(anon, method)(path, headers=VIEWER, **kwargs).status_code == 403
            assert getattr(anon, method)(path, **kwargs).status_code == 401
        assert anon.get(f"/connections/{cid}", headers=VIEWER).status_code == 200
        assert anon.get(f"/connections/{uuid.uuid4()}", headers=VIEWER).status_code == 404


# --- events and secrets --------------------------------------------------------------------


def fold_connections_topic(settings: Settings) -> dict[str, ConnectionState]:
    """Read the compacted topic from the start as a new consumer would: last value wins."""
    state: dict[str, ConnectionState] = {}
    for record in read_topic_to_end(settings, Topic.CONNECTIONS):
        key = record.key.decode()
        if record.value is None:
            state.pop(key, None)
        else:
            event = ConnectionState.model_validate_json(record.value)
            if key not in state or event.connection.version >= state[key].connection.version:
                state[key] = event
    return state


def wait_published(client: TestClient) -> None:
    client.app.state.resources.relay.flush()  # type: ignore[attr-defined]


def test_connections_topic_rebuilds_exactly_the_current_connections(
    client: TestClient, settings: Settings
) -> None:
    ids = [client.post("/connections", json=imap_body(name=f"c{i}")).json()["id"] for i in range(4)]
    client.patch(f"/connections/{ids[0]}", json={"description": "changed", "interval_minutes": 7})
    client.post(f"/connections/{ids[1]}/enable", json=WITHOUT_ESTIMATE)
    client.post(f"/connections/{ids[2]}/enable", json=WITHOUT_ESTIMATE)
    client.post(f"/connections/{ids[2]}/disable")
    assert client.delete(f"/connections/{ids[3]}").status_code == 204
    assert client.get(f"/connections/{ids[3]}").status_code == 404
    wait_published(client)

    folded = fold_connections_topic(settings)
    current = {c["id"]: c for c in client.get("/connections").json()["items"]}
    assert set(folded) == set(current) == set(ids[:3])
    for cid, event in folded.items():
        api_view = dict(current[cid])
        for field in ("has_password", "authorization", "status", "watch"):
            api_view.pop(field)
        assert event.connection.model_dump(mode="json") == api_view
    assert folded[ids[1]].connection.enabled is True
    assert folded[ids[2]].connection.enabled is False
    assert folded[ids[0]].connection.interval_minutes == 7


def test_planted_password_appears_nowhere(settings: Settings, logs: Any, database_url: str) -> None:
    planted = plant("password")
    responses: list[str] = []
    with api_client(settings) as client:
        created = client.post("/connections", json=imap_body(password=planted))
        responses.append(created.text)
        cid = created.json()["id"]
        responses.append(client.get(f"/connections/{cid}").text)
        responses.append(client.get("/connections").text)
        responses.append(
            client.patch(f"/connections/{cid}", json={"password": plant("password")}).text
        )
        responses.append(client.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).text)
        # A refused request echoes nothing of the secret either.
        responses.append(
            client.post(
                "/connections", json=imap_body(name="other", password=plant("password") + "\n")
            ).text
        )
        responses.append(client.get("/metrics").text)
        wait_published(client)

    records = read_topic_to_end(settings, Topic.CONNECTIONS)
    # create, change, enable (a republish repeats a version): every one searched below
    versions = {json.loads(r.value)["connection"]["version"] for r in records if r.value}
    assert versions == {1, 2, 3}
    topic_bytes = b"".join((r.value or b"") + (r.key or b"") for r in records)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT password_enc FROM connections")).scalar_one()
    engine.dispose()

    assert logs.records(), "the API wrote no log line at all: the capture is broken"
    for where, haystack in [
        ("responses", "".join(responses).encode()),
        ("logs", logs.text.encode()),
        ("topic", topic_bytes),
        ("database", bytes(stored)),
    ]:
        assert planted.encode() not in haystack, f"password found in {where}"


def test_writes_survive_a_broker_outage_through_the_outbox(
    settings: Settings, database_url: str
) -> None:
    from mailintake_devstack.broker import LocalBroker, free_port

    port = free_port()
    offline = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    with api_client(offline) as client:
        created = client.post("/connections", json=imap_body())
        assert created.status_code == 201  # the broker is down; the API still answers
        assert client.get("/readyz").status_code == 200
        relay = client.app.state.resources.relay  # type: ignore[attr-defined]
        assert not relay.healthy
        with LocalBroker(port=port):
            relay.wake.set()
            state = _wait_for(lambda: fold_connections_topic(offline), timeout_s=60)
            assert list(state) == [created.json()["id"]]
            assert _wait_for(lambda: relay.healthy, timeout_s=30)


def _wait_for(probe: Any, timeout_s: float) -> Any:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = probe()
        except Exception:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.3)


def test_enabling_and_polling_say_what_to_do_and_when(client: TestClient) -> None:
    cid = client.post("/connections", json=imap_body()).json()["id"]
    patched = errors_of(client.patch(f"/connections/{cid}", json={"enabled": True}))
    assert f"POST /connections/{cid}/enable" in patched["enabled"]
    refused = client.post(f"/connections/{cid}/poll")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"the connection is disabled: enable it first (POST /connections/{cid}/enable)"
    )
    enabled = client.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).json()
    assert enabled["first_poll"] == "at once (requested with the enabling), then every 5 min"
    again = client.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).json()
    assert again["first_poll"] == "already enabled: polled every 5 min"
    accepted = client.post(f"/connections/{cid}/poll").json()
    assert (accepted["detail"], accepted["poll_in_progress"]) == (
        "poll requested: it runs at once",
        False,
    )
    resources = client.app.state.resources  # type: ignore[attr-defined]
    with resources.sessions() as session, session.begin():  # a fetcher polls it now
        session.add(
            PollLease(
                connection_id=uuid.UUID(cid),
                token=1,
                holder="fetcher",
                expires_at=utcnow() + timedelta(seconds=30),
            )
        )
    busy = client.post(f"/connections/{cid}/poll").json()
    assert (busy["detail"], busy["poll_in_progress"]) == (
        "poll requested: it runs right after the poll under way",
        True,
    )
    resources.relay.flush()
    requests = read_topic_to_end(resources.settings, Topic.POLL_REQUESTED)
    assert len(requests) == 3  # the enabling's, and one per poll request
