"""The config API's hardening: security headers, the body limit, CORS off by default, the
limit on failed authentications, the audit log of configuration changes (no values), and
mail content for the reader role only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from mailintake_config_api.auth import hash_token
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import FailedMessage, Message
from mailintake_shared.settings import Settings
from tests.api import ADMIN, READER, VIEWER, api_client, imap_body
from tests.conftest import ADMIN_TOKEN
from tests.harness.pipeline import Database

pytestmark = pytest.mark.integration


def test_every_answer_carries_the_security_headers(settings: Settings) -> None:
    with api_client(settings) as api:
        for response in (
            api.get("/connections"),
            api.get("/connections", headers={"Authorization": "Bearer wrong"}),
            api.get("/healthz"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["cache-control"] == "no-store"
            assert "default-src 'none'" in response.headers["content-security-policy"]
        docs = api.get("/docs")
        assert docs.status_code == 200
        assert "content-security-policy" not in docs.headers  # Swagger UI loads from a CDN


def test_a_body_over_the_limit_is_refused_with_413(settings: Settings) -> None:
    small = settings.model_copy(update={"api_max_body_bytes": 2048})
    with api_client(small) as api:
        big = imap_body(description="x" * 3000)
        refused = api.post("/connections", json=big)
        assert refused.status_code == 413
        assert "MAILINTAKE_API_MAX_BODY_BYTES" in refused.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            encoded = json.dumps(big).encode()
            for i in range(0, len(encoded), 500):
                yield encoded[i : i + 500]

        streamed = api.post(
            "/connections", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert api.post("/connections", json=imap_body()).status_code == 201
        assert api.get("/connections").json()["total"] == 1


def test_cors_is_off_unless_origins_are_configured(settings: Settings) -> None:
    preflight = {
        "Origin": "https://ops.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    with api_client(settings) as api:
        answer = api.options("/connections", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    allowed = settings.model_copy(update={"api_cors_origins": ["https://ops.example.com"]})
    with api_client(allowed) as api:
        answer = api.options("/connections", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://ops.example.com"
        other = api.options("/connections", headers={**preflight, "Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_only_failures_are_counted_and_slowed(settings: Settings) -> None:
    """Every client here shares one address (as behind an ingress that is not a trusted
    proxy): an anonymous client's failures never lock out a valid token."""
    strict = settings.model_copy(update={"api_auth_failures_per_minute": 3})
    with api_client(strict) as api:
        wrong = {"Authorization": "Bearer not-a-token"}
        assert [api.get("/connections", headers=wrong).status_code for _ in range(3)] == [401] * 3
        for _ in range(5):
            limited = api.get("/connections", headers=wrong)
            assert limited.status_code == 429
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert api.get("/connections").status_code == 200  # a valid token: never refused
            assert api.get("/connections", headers=VIEWER).status_code == 200
        assert api.get("/connections", headers={"Authorization": ""}).status_code == 429
        assert api.post("/connections", json=imap_body()).status_code == 201
    with api_client(strict) as api:  # another process (a restart) starts afresh
        assert api.get("/connections", headers=wrong).status_code == 401


def test_configuration_changes_are_audited_without_values(settings: Settings, db: Database) -> None:
    password = "audit-planted-password-5d1c"
    with api_client(settings) as api:
        created = api.post("/connections", json=imap_body(password=password))
        cid = created.json()["id"]
        api.patch(f"/connections/{cid}", json={"password": password, "interval_minutes": 7})
        api.post(f"/connections/{cid}/disable")
        api.delete(f"/connections/{cid}")
        api.post("/connections", headers={"Authorization": "Bearer nope"}, json=imap_body())
        assert api.get("/audit", headers=VIEWER).status_code == 403
        answer = api.get("/audit")
    assert answer.status_code == 200
    entries = list(reversed(answer.json()["items"]))
    actor = f"admin:{hash_token(ADMIN_TOKEN)[:12]}"
    assert [(e["action"], e["status"]) for e in entries] == [
        ("POST /connections", 201),
        ("PATCH /connections/{connection_id}", 200),
        ("POST /connections/{connection_id}/disable", 200),
        ("DELETE /connections/{connection_id}", 204),
    ]
    assert {e["actor"] for e in entries} == {actor}
    assert json.loads(entries[1]["fields"]) == ["interval_minutes", "password"]
    assert json.loads(entries[1]["target"]) == {"connection_id": cid}
    assert password not in answer.text
    stored = db.rows("SELECT actor, action, target, fields FROM audit_log")
    assert len(stored) == 4
    assert password not in repr(stored)


def test_mail_content_needs_the_reader_role(settings: Settings) -> None:
    """Viewers see metadata (summaries, the queue, the logs); the bytes of mail — decrypted
    S/MIME included — need the reader role or admin."""
    raw = b"From: a@example.com\r\nSubject: salary review\r\n\r\nconfidential body\r\n"
    engine = make_engine(settings)
    with make_session_factory(engine)() as session, session.begin():
        message = Message(
            connection_id=uuid.uuid4(),
            folder="INBOX",
            server_id="1:1",
            sha256="0" * 64,
            size=len(raw),
            raw=raw,
            unwrapped=raw,
            subject="salary review",
            action_state="applied",
        )
        failed = FailedMessage(
            connection_id=message.connection_id,
            folder="INBOX",
            server_id="1:2",
            reason="chunks did not add up",
            raw=raw,
        )
        session.add_all([message, failed])
        session.flush()
        content = [
            f"/messages/{message.id}/raw",
            f"/messages/{message.id}/raw?original=true",
            f"/queue/message/{message.id}/raw",
            f"/queue/failed/{failed.id}/raw",
        ]
        metadata = [f"/messages/{message.id}", "/queue", "/log/messages"]
    engine.dispose()
    with api_client(settings) as api:
        for path in content:
            refused = api.get(path, headers=VIEWER)
            assert refused.status_code == 403, path
            assert "reader" in refused.json()["detail"]
            for role in (READER, ADMIN):
                answer = api.get(path, headers=role)
                assert answer.status_code == 200, (path, answer.text)
                assert answer.content == raw
        for path in metadata:
            for role in (VIEWER, READER):
                answer = api.get(path, headers=role)
                assert answer.status_code == 200, path
                assert b"confidential body" not in answer.content
        assert api.get(f"/messages/{message.id}", headers=VIEWER).json()["subject"] == (
            "salary review"
        )
        # A reader reads; it does not write.
        assert api.post("/connections", json=imap_body(), headers=READER).status_code == 403
        assert api.delete(f"/queue/failed/{failed.id}", headers=READER).status_code == 403
