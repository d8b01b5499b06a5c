"""Restore judges a backup as the API judges a request: every row through the same schemas
and rules, every secret only with the row (and destination) it was stored for. An edited
file is refused whole, naming the row and the rule; nothing of it is stored."""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from mailintake_config_api.backup import BackupError, backup, restore
from mailintake_shared.db.bindings import password_binding
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import Connection
from mailintake_shared.oauth.tokens import save_grant
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from tests.api import api_client, imap_body, microsoft_connection
from tests.harness.pipeline import Database
from tests.harness.planted import planted
from tests.harness.smime import identity

pytestmark = pytest.mark.integration

Document = dict[str, Any]


class Restorer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessions = make_session_factory(self.engine)
        self.box = SecretBox(settings.encryption_keys)

    def backup(self) -> Document:
        with self.sessions() as session:
            return backup(session)

    def restore(self, document: Document, *, bind_unbound: bool = False) -> None:
        with self.sessions() as session, session.begin():  # as the command: one transaction
            restore(session, self.settings, self.box, document, bind_unbound=bind_unbound)


@pytest.fixture
def restorer(settings: Settings) -> Iterator[Restorer]:
    running = Restorer(settings)
    yield running
    running.engine.dispose()


@pytest.fixture
def saved(settings: Settings, restorer: Restorer) -> Document:
    """Two password connections, an authorized OAuth2 one, a credential, a certificate."""
    alice = identity("alice")
    with api_client(settings) as api:
        for name in ("first", "second"):
            api.post("/connections", json=imap_body(name=name, password=planted("password")))
        cid = microsoft_connection(api)
        pem = (alice.certificate_pem + alice.key_pem()).decode()
        assert api.post("/certificates", json={"name": "alice", "pem": pem}).status_code == 201
    with restorer.sessions() as session, session.begin():
        row = session.get(Connection, uuid.UUID(cid))
        assert row is not None
        expires = datetime.now(UTC) + timedelta(hours=1)
        save_grant(session, restorer.box, row, "access", planted("refresh-token"), expires)
    return restorer.backup()


def _connection(document: Document, name: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = document["connections"]["connections"]
    return next(row for row in rows if row["name"] == name)


def _edit(change: Callable[[Document], None]) -> Callable[[Document], Document]:
    def edited(document: Document) -> Document:
        changed = copy.deepcopy(document)
        change(changed)
        return changed

    return edited


def _set(connection: str, **values: Any) -> Callable[[Document], Document]:
    return _edit(lambda document: _connection(document, connection).update(values))


def _swap_passwords(document: Document) -> None:
    first, second = _connection(document, "first"), _connection(document, "second")
    first["password_enc"], second["password_enc"] = second["password_enc"], first["password_enc"]


def _certificate(document: Document) -> dict[str, Any]:
    row: dict[str, Any] = document["certificates"]["certificates"][0]
    return row


EDITS: list[tuple[str, Callable[[Document], Document], str]] = [
    ("a new host", _set("first", host="imap.evil.example"), "password_enc does not belong"),
    ("verification off", _set("first", tls_verify=False), "password_enc does not belong"),
    ("plain text", _set("first", encryption="none", port=143), "password_enc does not belong"),
    ("another account", _set("second", username="ceo@example.com"), "does not belong"),
    ("swapped passwords", _edit(_swap_passwords), "password_enc does not belong"),
    (
        "a CR LF folder",
        _set("first", folder="INBOX\r\nX1 DELETE INBOX"),
        "folder: folder must be text without control characters",
    ),
    ("a bogus protocol", _set("first", protocol="bogus"), "protocol:"),
    ("a bad host", _set("first", host="bad host/x"), "host must be a hostname"),
    (
        "an OAuth2 connection moved",
        _set("m365", host="outlook.office.de"),
        "refresh_token_enc does not belong",
    ),
    (
        "another tenant",
        _edit(lambda d: d["credentials"]["oauth_credentials"][0].update(tenant="evil")),
        "client_secret_enc does not belong",
    ),
    (
        "another certificate",
        _edit(lambda d: _certificate(d).update(fingerprint_sha256="0" * 64)),
        "private_key_enc does not belong",
    ),
    (
        "a certificate without its key",
        _edit(
            lambda d: _certificate(d).update(
                certificate_pem=identity("bob").certificate_pem.decode()
            )
        ),
        "certificate_pem: the private key does not belong to the certificate",
    ),
    ("a malformed id", _set("first", id="not-an-id"), "malformed value"),
    ("a name taken twice", _set("second", name="FIRST"), "another row is named"),
]


@pytest.mark.parametrize(("what", "edit", "refusal"), EDITS, ids=[e[0] for e in EDITS])
def test_an_edited_backup_is_refused_and_changes_nothing(
    restorer: Restorer,
    saved: Document,
    db: Database,
    what: str,
    edit: Callable[[Document], Document],
    refusal: str,
) -> None:
    before = db.rows("SELECT id, host, username, folder, tls_verify FROM connections ORDER BY id")
    with pytest.raises(BackupError) as refused:
        restorer.restore(edit(saved))
    assert refusal in str(refused.value), what
    after = db.rows("SELECT id, host, username, folder, tls_verify FROM connections ORDER BY id")
    assert after == before


def test_an_unedited_backup_restores_and_its_secrets_work(
    restorer: Restorer, saved: Document, db: Database
) -> None:
    db.execute("DELETE FROM connection_certificates")
    db.execute("DELETE FROM oauth_grants")
    db.execute("DELETE FROM connections")
    db.execute("DELETE FROM certificates")
    db.execute("DELETE FROM oauth_credentials")
    restorer.restore(saved)
    restorer.restore(saved)  # safe to run twice
    assert db.scalar("SELECT count(*) FROM connections") == 3
    assert db.scalar("SELECT count(*) FROM oauth_grants") == 1
    with restorer.sessions() as session:
        row = session.query(Connection).filter_by(name="first").one()
        password = restorer.box.decrypt(row.password_enc or b"", password_binding(row))
        assert password.get_secret_value().startswith("PLANTED-password-")


def test_a_backup_of_the_earlier_format_restores_only_when_told_to_bind_it(
    restorer: Restorer, saved: Document, settings: Settings
) -> None:
    """Secrets stored before they were bound (Fernet) cannot prove where they belong: the
    operator says the file is unchanged, and they are bound to what it names."""
    key = settings.encryption_keys[0].get_secret_value().encode()
    legacy = copy.deepcopy(saved)
    old = Fernet(key).encrypt(b"legacy-password")
    _connection(legacy, "first")["password_enc"] = base64.b64encode(old).decode()
    with pytest.raises(BackupError, match="--bind-unbound-secrets"):
        restorer.restore(legacy)
    restorer.restore(legacy, bind_unbound=True)
    with restorer.sessions() as session:
        row = session.query(Connection).filter_by(name="first").one()
        password = restorer.box.decrypt(row.password_enc or b"", password_binding(row))
        assert password.get_secret_value() == "legacy-password"
