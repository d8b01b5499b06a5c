"""Rotating the encryption key: after ``mailintake-rotate-secrets`` with ``new,old``, every
stored secret decrypts with the new key alone, bound as before; running it again changes
nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailintake_shared.db.bindings import (
    client_secret_binding,
    password_binding,
    private_key_binding,
)
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import Certificate, Connection, OAuthCredential
from mailintake_shared.db.rekey import rekey
from mailintake_shared.secretbox import SecretBox, SecretDecryptError, generate_key
from mailintake_shared.settings import Settings
from tests.api import api_client, imap_body
from tests.harness.pipeline import Database
from tests.harness.planted import planted
from tests.harness.smime import identity

pytestmark = pytest.mark.integration


def test_every_secret_moves_to_the_new_key(settings: Settings, db: Database) -> None:
    passwords = [planted("password") for _ in range(3)]
    alice = identity("alice")
    with api_client(settings) as api:
        for i, password in enumerate(passwords):
            body = imap_body(name=f"box {i}", password=password)
            assert api.post("/connections", json=body).status_code == 201
        pem = (alice.certificate_pem + alice.key_pem()).decode()
        assert api.post("/certificates", json={"name": "a", "pem": pem}).status_code == 201
        credential = {"name": "app", "provider": "google", "client_id": "c", "client_secret": "s"}
        assert api.post("/oauth-credentials", json=credential).status_code == 201
    old, new = settings.encryption_keys[0].get_secret_value(), generate_key()
    engine = make_engine(settings)
    try:
        sessions = make_session_factory(engine)
        counts = rekey(sessions, SecretBox([new, old]))
        assert (counts["connections"].secrets, counts["oauth_credentials"].secrets) == (3, 1)
        assert counts["certificates"].secrets == 1
        only_new = SecretBox([new])
        with sessions() as session:
            rows = session.scalars(select(Connection).order_by(Connection.name)).all()
            decrypted = [
                only_new.decrypt(row.password_enc or b"", password_binding(row)).get_secret_value()
                for row in rows
            ]
            assert decrypted == passwords
            certificate = session.scalars(select(Certificate)).one()
            key = only_new.decrypt(certificate.private_key_enc, private_key_binding(certificate))
            assert "PRIVATE KEY" in key.get_secret_value()
            stored = session.scalars(select(OAuthCredential)).one()
            secret, binding = stored.client_secret_enc or b"", client_secret_binding(stored)
            assert only_new.decrypt(secret, binding).get_secret_value() == "s"
            with pytest.raises(SecretDecryptError):
                SecretBox([old]).decrypt(secret, binding)  # the old key is no longer needed
        again = rekey(sessions, SecretBox([new, old]))
        assert again["connections"].secrets == 3
        secret = db.scalar("SELECT client_secret_enc FROM oauth_credentials")
        assert only_new.decrypt(bytes(secret), binding).get_secret_value() == "s"
    finally:
        engine.dispose()
