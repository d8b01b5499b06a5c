"""A secret goes only to the destination it was given for: the API asks for it again when
anything that decides where it goes changes, and the ciphertext is bound to the row and its
destination, so a destination changed any other way leaves the secret undecryptable. The
migration binds the secrets stored before, and key rotation keeps every binding."""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from mailintake_shared.db.bindings import (
    client_secret_binding,
    grant_binding,
    password_binding,
)
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.migrate import upgrade
from mailintake_shared.db.models import Connection, OAuthCredential, OAuthGrant
from mailintake_shared.db.queries import mailbox_config
from mailintake_shared.db.rekey import rekey
from mailintake_shared.oauth.tokens import AuthorizationRequiredError, TokenStore, save_grant
from mailintake_shared.secretbox import SecretBindingError, SecretBox, generate_key, is_unbound
from mailintake_shared.settings import Settings
from tests.api import api_client, imap_body, microsoft_connection
from tests.harness.pipeline import Database
from tests.harness.planted import planted
from tests.harness.tls import make_pki

pytestmark = pytest.mark.integration


def _row(settings: Settings, cid: str) -> Connection:
    engine = make_engine(settings)
    try:
        with make_session_factory(engine)() as session:
            row = session.get(Connection, uuid.UUID(cid))
            assert row is not None
            return row
    finally:
        engine.dispose()


def _password(settings: Settings, cid: str) -> str | None:
    config = mailbox_config(_row(settings, cid), SecretBox(settings.encryption_keys))
    return config.password.get_secret_value() if config.password else None


def test_changing_the_destination_asks_for_the_password_again(
    settings: Settings, tmp_path: Any
) -> None:
    password = planted("password")
    ca = make_pki(tmp_path).ca_text
    with api_client(settings) as api:
        cid = api.post("/connections", json=imap_body(password=password)).json()["id"]
        url = f"/connections/{cid}"
        for change, field in [
            ({"host": "imap.evil.example"}, "host"),
            ({"port": 1993}, "port"),
            ({"encryption": "none"}, "encryption"),
            ({"encryption": "starttls"}, "encryption"),
            ({"tls_verify": False}, "tls_verify"),
            ({"tls_ca_pem": ca}, "tls_ca_pem"),
            ({"username": "someone-else@example.com"}, "username"),
            ({"shared_mailbox": "ceo@example.com"}, "shared_mailbox"),
            ({"protocol": "pop3"}, "protocol"),
        ]:
            refused = api.patch(url, json=change)
            assert refused.status_code == 422, (change, refused.text)
            [error] = refused.json()["errors"]
            assert error["field"] == "password"
            changed = error["rule"].split("because ")[1].split(" changed")[0].split(", ")
            assert field in changed, error["rule"]
        assert api.get(url).json()["version"] == 1  # nothing changed
        # What does not move the password needs no password: other fields, or the default
        # port written out.
        for change in ({"interval_minutes": 9}, {"folder": "Archive"}, {"port": 993}):
            assert api.patch(url, json=change).status_code == 200, change
        assert _password(settings, cid) == password
        # Sent again, it goes to the new destination, and only there.
        moved = api.patch(url, json={"host": "imap.other.example", "password": "new-pw"})
        assert moved.status_code == 200, moved.text
        assert _password(settings, cid) == "new-pw"


def test_a_destination_changed_outside_the_api_gets_no_password(
    settings: Settings, db: Database
) -> None:
    """As a restored backup whose host was edited, or a hand-made UPDATE: the stored
    password does not decrypt for the new destination, so the test sends it nowhere (a
    listener stands where the connection now points, and hears nothing)."""
    password = planted("password")
    received = bytearray()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            listener.settimeout(10)
            try:
                peer, _ = listener.accept()
            except TimeoutError:
                return
            with peer:
                peer.sendall(b"* OK ready\r\n")
                peer.settimeout(2)
                while chunk := peer.recv(4096):
                    received.extend(chunk)
                    peer.sendall(b"A001 NO no\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with api_client(settings) as api:
            cid = api.post("/connections", json=imap_body(password=password)).json()["id"]
            db.execute(
                "UPDATE connections SET host = '127.0.0.1', port = :port, encryption = 'none' "
                "WHERE id = :id",
                port=port,
                id=cid,
            )
            tested = api.post(f"/connections/{cid}/test").json()
        assert tested["ok"] is False
        assert tested["failed_step"] == "authentication"
        assert "does not belong to this connection" in tested["error"]
        assert _password(settings, cid) is None
        row = _row(settings, cid)
        with pytest.raises(SecretBindingError):
            SecretBox(settings.encryption_keys).decrypt(
                row.password_enc or b"", password_binding(row)
            )
    assert password.encode() not in bytes(received)


def test_an_oauth2_connection_moved_elsewhere_must_be_authorized_again(
    settings: Settings,
) -> None:
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    box = SecretBox(settings.encryption_keys)
    try:
        with api_client(settings) as api:
            cid = microsoft_connection(api)
            with sessions() as session, session.begin():
                row = session.get(Connection, uuid.UUID(cid))
                assert row is not None
                expires = datetime.now(UTC) + timedelta(hours=1)
                save_grant(session, box, row, planted("access-token"), "refresh", expires)
            store = TokenStore(sessions, box, settings)
            here = grant_binding(_row(settings, cid))
            assert store.access_token(uuid.UUID(cid), binding=here)  # read, and now cached
            assert api.get(f"/connections/{cid}").json()["authorization"] == "authorized"
            unchanged = api.patch(f"/connections/{cid}", json={"interval_minutes": 3})
            assert unchanged.json()["authorization"] == "authorized"
            moved = api.patch(f"/connections/{cid}", json={"host": "outlook.office.de"})
            assert moved.status_code == 200, moved.text
            assert moved.json()["authorization"] == "not_authorized"
        with sessions() as session:
            assert session.get(OAuthGrant, uuid.UUID(cid)) is None
        there = grant_binding(_row(settings, cid))
        with pytest.raises(AuthorizationRequiredError):  # not the token cached for the old host
            store.access_token(uuid.UUID(cid), binding=there)
    finally:
        engine.dispose()


def test_rotation_keeps_every_binding(settings: Settings, db: Database) -> None:
    with api_client(settings) as api:
        cid = api.post("/connections", json=imap_body(password="pw-1")).json()["id"]
    old, new = settings.encryption_keys[0].get_secret_value(), generate_key()
    engine = make_engine(settings)
    try:
        rekey(make_session_factory(engine), SecretBox([new, old]))
    finally:
        engine.dispose()
    rotated = settings.model_copy(update={"encryption_keys": [new]})
    assert _password(rotated, cid) == "pw-1"
    db.execute("UPDATE connections SET username = 'mallory' WHERE id = :id", id=cid)
    assert _password(rotated, cid) is None


LEGACY_ROWS = """
INSERT INTO oauth_credentials (id, name, provider, client_id, client_secret_enc, tenant,
  app_only, created_at, updated_at)
VALUES (:credential, 'app', 'microsoft', 'c', :secret, 'contoso', false, now(), now());
INSERT INTO connections (id, version, name, protocol, transport, encryption, host, port,
  tls_verify, interval_minutes, timeout_ms, username, password_enc, after_download,
  first_sync, enabled, created_at, updated_at)
VALUES (:connection, 1, 'old', 'imap', 'imap', 'ssl', 'imap.example.com', NULL, true, 5,
  30000, 'support@example.com', :password, 'mark_seen', 'all', false, now(), now());
"""


def test_the_migration_binds_the_secrets_stored_before(postgres: Any) -> None:
    """Secrets stored by the earlier version (Fernet, unbound) are bound by the migration:
    the database at revision 0009, then upgraded."""
    url = str(postgres.url(postgres.create_database()))
    engine = create_engine(url)
    key = generate_key()
    fernet = Fernet(key.encode())
    ids = {"credential": uuid.uuid4(), "connection": uuid.uuid4()}
    try:
        upgrade(engine, "0009")
        with engine.begin() as connection:
            for statement in LEGACY_ROWS.split(";")[:-1]:
                connection.execute(
                    text(statement),
                    {
                        **{k: str(v) for k, v in ids.items()},
                        "secret": fernet.encrypt(b"client-secret"),
                        "password": fernet.encrypt(b"old-password"),
                    },
                )
        with pytest.raises(RuntimeError, match="MAILINTAKE_ENCRYPTION_KEYS"):
            upgrade(engine)  # secrets to bind, and no key to bind them with
        upgrade(engine, secrets=SecretBox([key]))
        with make_session_factory(engine)() as session:
            row = session.get(Connection, ids["connection"])
            credential = session.get(OAuthCredential, ids["credential"])
            assert row is not None
            assert credential is not None
            assert row.password_enc is not None
            assert credential.client_secret_enc is not None
            assert not is_unbound(row.password_enc)
            box = SecretBox([key])
            assert box.decrypt(row.password_enc, password_binding(row)).get_secret_value() == (
                "old-password"
            )
            secret = box.decrypt(credential.client_secret_enc, client_secret_binding(credential))
            assert secret.get_secret_value() == "client-secret"
            row.host = "imap.evil.example"  # not saved: only the binding is looked at
            with pytest.raises(SecretBindingError):
                box.decrypt(row.password_enc, password_binding(row))
    finally:
        engine.dispose()


@pytest.fixture
def client(settings: Settings) -> Any:
    with api_client(settings) as running:
        yield running


def test_credential_tenant_needs_the_client_secret_again(client: TestClient) -> None:
    body = {"name": "app", "provider": "microsoft", "client_id": "c", "client_secret": "s-1"}
    credential = client.post("/oauth-credentials", json=body).json()["id"]
    url = f"/oauth-credentials/{credential}"
    refused = client.patch(url, json={"tenant": "fabrikam"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "client_secret"
    assert client.patch(url, json={"name": "renamed", "scopes": ["x"]}).status_code == 200
    moved = client.patch(url, json={"tenant": "fabrikam", "client_secret": "s-2"})
    assert moved.status_code == 200
    assert moved.json()["tenant"] == "fabrikam"
