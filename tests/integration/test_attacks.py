"""The API, the console and their rules attacked as a user and an operator would, on both
databases (PostgreSQL, and SQLite as ``make run`` has it): times at the calendar's edges,
names that differ only in the case of a non-ASCII letter, a sign-in's ``next`` with line
breaks, every operation under every role, and an audit entry the database refuses.

Each test names the promise it guards (DESIGN.md: 6 secrets stay secret, 7 bad input is
refused with a 4xx naming the field, 10 a 2xx means done; SECURITY.md's roles)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from mailintake_shared.db.migrate import upgrade
from mailintake_shared.settings import Settings
from tests.api import api_client, imap_body
from tests.conftest import ADMIN_TOKEN
from tests.console import csrf_of, sign_in

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "services/config-api/openapi.json").read_text())


@pytest.fixture(params=["postgresql", "sqlite"])
def api(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    database = settings.database_url
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'attacks.db'}"
        engine = create_engine(database)
        upgrade(engine)
        engine.dispose()
    with api_client(settings.model_copy(update={"database_url": database})) as client:
        yield client


# Promise 7 — the README's own `mailintake log polls --since 2026-11-24` sent a time without
# an offset, and every time filter answered 500 to it (the database layer refuses naive
# times); a time with an offset that is no time in UTC did the same.
TIME_FILTERED = ("/log/polls", "/log/messages", "/queue", "/audit")


def test_time_filters_read_a_time_without_offset_as_utc(api: TestClient) -> None:
    for path in TIME_FILTERED:
        for since in ("2026-11-24", "2026-11-24T08:00:00", "2026-11-24T08:00:00Z"):
            answer = api.get(path, params={"since": since, "until": "2999-01-01"})
            assert answer.status_code == 200, (path, since, answer.text)
    created = api.post("/connections", json=imap_body()).json()["id"]
    replay = api.post(f"/connections/{created}/replay", json={"since": "2026-01-01T00:00:00"})
    assert replay.status_code == 202, replay.text


def test_a_time_that_is_no_time_in_utc_is_refused_naming_its_field(api: TestClient) -> None:
    edges = {"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"}
    for path in TIME_FILTERED:
        for field, value in edges.items():
            answer = api.get(path, params={field: value})
            assert answer.status_code == 422, (path, field, answer.text)
            assert [e["field"] for e in answer.json()["errors"]] == [field]
            assert "UTC" in answer.json()["errors"][0]["rule"]
    created = api.post("/connections", json=imap_body()).json()["id"]
    replay = api.post(f"/connections/{created}/replay", json={"since": edges["since"]})
    assert replay.status_code == 422, replay.text
    assert replay.json()["errors"][0]["field"] == "since"
    sign_in(api, ADMIN_TOKEN)
    page = api.get("/console/log", params={"until": "9999-12-31T23:59-14:00"})
    assert page.status_code == 422, page.text
    assert "until must be a time between" in page.text


# Promise 7 and the README's "search over name, description, host and username" — on
# SQLite, whose lower() folds ASCII only, a second "MÜLLER Straße" answered 500 (the unique
# index refused it at the flush), "ÉCOLE" and "école" were two names, and searching for
# "müller" (or "MÜLLER" itself) found nothing.
def test_names_differing_in_non_ascii_case_are_one_name_and_search_finds_them(
    api: TestClient,
) -> None:
    first = api.post("/connections", json=imap_body(name="MÜLLER Straße", username="ÄRGER@x.de"))
    assert first.status_code == 201, first.text
    for again in ("MÜLLER Straße", "müller straße", "Müller Straße"):
        refused = api.post("/connections", json=imap_body(name=again))
        assert refused.status_code == 409, (again, refused.text)
    for term in ("MÜLLER", "müller", "Müller straße", "ärger"):
        found = api.get("/connections", params={"q": term}).json()
        assert [c["name"] for c in found["items"]] == ["MÜLLER Straße"], term
    credential = {"name": "ÉCOLE", "provider": "google", "client_id": "c", "client_secret": "s"}
    assert api.post("/oauth-credentials", json=credential).status_code == 201
    twin = api.post("/oauth-credentials", json={**credential, "name": "école"})
    assert twin.status_code == 409, twin.text


# SECURITY.md: no 500 for control characters in any field. The sign-in's `next` went into
# htmx's HX-Redirect header as it came: with a line break or NUL the server dropped the
# connection without an answer, with U+2028 it answered 500 (the 303 percent-encoded it).
@pytest.mark.parametrize(
    "target", ["/console\r\nSet-Cookie: x=1", "/console/\x00", "/console/\u2028"]
)
def test_the_sign_in_redirect_encodes_its_target_for_htmx_too(api: TestClient, target: str) -> None:
    page = api.get("/console/sign-in")
    signed = api.post(
        "/console/sign-in",
        data={"token": ADMIN_TOKEN, "csrf": csrf_of(page.text), "next": target},
        headers={"HX-Request": "true"},
        follow_redirects=False,
    )
    assert signed.status_code == 200, signed.text
    location = signed.headers["hx-redirect"]
    assert location.startswith("/console")
    assert location.isascii()
    assert not re.search(r"[\x00-\x20\x7f]", location)
