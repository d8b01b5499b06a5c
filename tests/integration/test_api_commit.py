"""A 2xx means done: the config API answers only after its transaction committed, and a
commit the database refuses is a 503 that stores nothing (PostgreSQL refuses it here with a
deferred constraint trigger, which fires at COMMIT, as a full disk would)."""

from __future__ import annotations

import httpx
import pytest

from mailintake_shared.settings import Settings
from tests.api import ADMIN, WITHOUT_ESTIMATE, api_client, imap_body, served
from tests.harness.pipeline import Database

pytestmark = pytest.mark.integration

REFUSE_AT_COMMIT = """
CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;
CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT OR UPDATE ON connections
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit();
"""
# A commit that takes a while: long enough that an answer sent before it would reach the
# client, and the client's next call the database, before the row is visible.
SLOW_COMMIT = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE ON connections
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


def test_a_refused_commit_is_a_503_and_stores_nothing(settings: Settings, db: Database) -> None:
    with api_client(settings) as api:
        created = api.post("/connections", json=imap_body(name="kept")).json()
        db.execute(REFUSE_AT_COMMIT)
        for i in range(3):
            refused = api.post("/connections", json=imap_body(name=f"refused {i}"))
            assert refused.status_code == 503, refused.text
            assert "not saved" in refused.json()["detail"]
        changed = api.patch(f"/connections/{created['id']}", json={"interval_minutes": 9})
        assert changed.status_code == 503
        db.execute("DROP TRIGGER refuse_commit ON connections")
        assert [c["name"] for c in api.get("/connections").json()["items"]] == ["kept"]
        assert api.get(f"/connections/{created['id']}").json()["interval_minutes"] == 5
        assert db.scalar("SELECT count(*) FROM connections") == 1
        # Nothing of the refused requests reached the outbox either (the kept one's event
        # may or may not be published yet).
        assert db.scalar("SELECT count(*) FROM outbox WHERE key != :id", id=created["id"]) == 0
        audit = {(e["action"], e["status"]) for e in api.get("/audit").json()["items"]}
        assert ("POST /connections", 503) in audit
        assert ("PATCH /connections/{connection_id}", 503) in audit


def test_a_call_right_after_a_2xx_sees_the_change(settings: Settings, db: Database) -> None:
    db.execute(SLOW_COMMIT)
    with served(settings) as url, httpx.Client(base_url=url, headers=ADMIN, timeout=60) as api:
        for i in range(3):
            created = api.post("/connections", json=imap_body(name=f"box {i}"))
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            assert api.get(f"/connections/{cid}").status_code == 200
            enabled = api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE)
            assert enabled.status_code == 200, enabled.text
            assert api.post(f"/connections/{cid}/poll").status_code == 202
