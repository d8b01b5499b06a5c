"""Rotating the encryption key: after ``mailintake-rotate-secrets`` with ``new,old``, every
stored secret decrypts with the new key alone; running it again changes nothing."""

from __future__ import annotations

import pytest

from mailintake_shared.db.engine import make_engine, make_session_factory
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
        stored = db.rows("SELECT name, password_enc FROM connections ORDER BY name")
        decrypted = [only_new.decrypt(bytes(enc)).get_secret_value() for _, enc in stored]
        assert decrypted == passwords
        key = db.scalar("SELECT private_key_enc FROM certificates")
        assert "PRIVATE KEY" in only_new.decrypt(bytes(key)).get_secret_value()
        secret = db.scalar("SELECT client_secret_enc FROM oauth_credentials")
        assert only_new.decrypt(bytes(secret)).get_secret_value() == "s"
        with pytest.raises(SecretDecryptError):
            SecretBox([old]).decrypt(bytes(secret))  # the old key is no longer needed
        again = rekey(sessions, SecretBox([new, old]))
        assert again["connections"].secrets == 3
        assert only_new.decrypt(bytes(db.scalar("SELECT client_secret_enc FROM oauth_credentials")))
    finally:
        engine.dispose()
