"""The API, the console and their rules attacked as a user and an operator would, on both
databases (PostgreSQL, and SQLite as ``make run`` has it): times at the calendar's edges,
names that differ only in the case of a non-ASCII letter, a sign-in's ``next`` with line
breaks, every operation under every role, and an audit entry the database refuses.

Each test names the promise it guards (DESIGN.md: 6 secrets stay secret, 7 bad input is
refused with a 4xx naming the field, 10 a 2xx means done; SECURITY.md's roles)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from mailintake_config_api.console import connection_pages, home, incoming_pages, oauth_pages
from mailintake_shared.db.migrate import upgrade
from mailintake_shared.settings import Settings
from tests.api import ADMIN, READER, VIEWER, api_client, imap_body
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN, LogCapture
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
    changed = {"database_url": database, "api_auth_failures_per_minute": 1_000_000}
    with api_client(settings.model_copy(update=changed)) as client:
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


# SECURITY.md's roles, on every operation of the OpenAPI document and every form of the
# console: a route that forgot its dependency would answer here.
ADMIN_ONLY_READS = {"/audit"}
MAIL_CONTENT = {"/messages/{message_id}/raw", "/queue/{kind}/{entry_id}/raw"}


def _operations() -> Iterator[tuple[str, str, str]]:
    """(method, template, a path for it with made-up ids) of each operation that needs a
    token."""
    for template, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            if not operation.get("security"):
                continue
            path = template
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path":
                    continue
                schema = parameter["schema"]
                value = {"uuid": str(uuid.uuid4())}.get(schema.get("format"), "1")
                if "$ref" in schema:  # the queue's entry kinds
                    value = "failed"
                path = path.replace("{" + parameter["name"] + "}", value)
            yield method.upper(), template, path


def test_every_operation_answers_each_role_as_security_md_says(api: TestClient) -> None:
    seen = 0
    for method, template, path in _operations():
        seen += 1
        assert api.request(method, path, headers={"Authorization": ""}).status_code == 401
        for role, headers in (("viewer", VIEWER), ("reader", READER)):
            answer = api.request(method, path, headers=headers, json={})
            refused = (
                method != "GET"
                or template in ADMIN_ONLY_READS
                or (role == "viewer" and template in MAIL_CONTENT)
            )
            assert (answer.status_code == 403) is refused, (role, method, path, answer.text)
    assert seen == 32  # every operation of the document but the probes, documents and callback


def test_no_console_form_changes_anything_for_a_viewer(api: TestClient) -> None:
    created = api.post("/connections", json=imap_body()).json()["id"]
    forms = [
        route.path.replace("{connection_id}", created)
        .replace("{credential_id}", str(uuid.uuid4()))
        .replace("{kind}", "failed")
        .replace("{entry_id}", "1")
        for pages in (connection_pages, home, incoming_pages, oauth_pages)
        for route in pages.router.routes
        if isinstance(route, APIRoute)
        and route.path.startswith("/console/")
        and "POST" in (route.methods or ())
        and route.path not in ("/console/sign-in", "/console/sign-out")
    ]
    assert len(forms) == 14  # each POST route of the console but signing in and out
    csrf = sign_in(api, VIEWER_TOKEN)
    for form in forms:
        answer = api.post(form, data={"csrf": csrf, **imap_body(name="changed")})
        assert answer.status_code == 403, (form, answer.text)
    api.cookies.clear()
    shown = api.get(f"/connections/{created}", headers=ADMIN).json()
    assert (shown["name"], shown["enabled"]) == ("Support inbox", False)
    assert api.get("/connections", headers=ADMIN).json()["total"] == 1


# SECURITY.md: an anonymous client is answered 401, then 429, and "unauthenticated attempts
# are in the log, not" the audit log. /oauth/callback needs no token (the provider sends the
# browser there), and each call with a made-up state wrote an audit entry: 51 in a row from
# one address, unslowed, burying the administrators' changes.
def test_made_up_authorization_callbacks_are_slowed_and_not_audited(
    settings: Settings, logs: LogCapture
) -> None:
    limited = settings.model_copy(update={"api_auth_failures_per_minute": 5})
    with api_client(limited) as api:
        answers = [
            api.get("/oauth/callback", params={"state": f"guess-{i}", "code": "x"}).status_code
            for i in range(8)
        ]
        assert answers == [400] * 5 + [429] * 3
        assert api.get("/audit").json()["total"] == 0
        assert api.get("/connections").status_code == 200  # a valid token is still served
    refused = [r for r in logs.records() if r.get("event") == "authorization callback refused"]
    assert len(refused) == 8
    assert "unknown or has expired" in refused[0]["reason"]
