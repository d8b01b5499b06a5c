"""The web console over HTTP, in-process against the real database and broker: sign-in and
its cookie, CSRF on every form, the roles, the page's own Content-Security-Policy, and the
API's own rules shown next to the fields. (``test_console_browser.py`` drives it in Chromium.)"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from scripts.vendor_htmx import SHA256

from mailintake_config_api.auth import TokenTable, hash_token
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import ConnectionWatch, PollLog
from mailintake_shared.settings import Settings
from tests.api import ADMIN, WITHOUT_ESTIMATE, api_client, imap_body
from tests.conftest import ADMIN_TOKEN, READER_TOKEN, VIEWER_TOKEN
from tests.console import csrf_of, sign_in
from tests.harness.planted import planted

pytestmark = pytest.mark.integration


@pytest.fixture
def console(settings: Settings) -> Iterator[TestClient]:
    with api_client(settings) as client:
        yield client


def _form(**overrides: str) -> dict[str, str]:
    body = {k: str(v) for k, v in imap_body().items()}
    body.update(tls_verify="on", interval_minutes="5", **overrides)
    return body


def _connections(client: TestClient) -> int:
    total: int = client.get("/connections", headers=ADMIN).json()["total"]
    return total


def test_sign_in_gives_a_strict_http_only_cookie_and_pages_a_tight_policy(
    console: TestClient,
) -> None:
    first = console.get("/console/connections", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fconnections"

    page = console.get("/console/sign-in")
    wrong = console.post(
        "/console/sign-in", data={"token": "not-a-token", "csrf": csrf_of(page.text)}
    )
    assert wrong.status_code == 401
    assert "this token is not valid here" in wrong.text
    no_csrf = console.post("/console/sign-in", data={"token": ADMIN_TOKEN})
    assert no_csrf.status_code == 403

    signed = console.post(
        "/console/sign-in",
        data={"token": ADMIN_TOKEN, "csrf": csrf_of(page.text), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert (signed.status_code, signed.headers["location"]) == (303, "/console")
    cookie = signed.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/console"):
        assert attribute in cookie
    assert "secure" not in cookie.replace("samesite", "")  # plain HTTP here; TLS sets it
    assert ADMIN_TOKEN not in signed.headers["set-cookie"]
    assert hash_token(ADMIN_TOKEN) not in signed.headers["set-cookie"]

    dashboard = console.get("/console")
    assert dashboard.status_code == 200
    policy = dashboard.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "style-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert dashboard.headers["referrer-policy"] == "same-origin"  # forms then send their Origin
    assert "<script>" not in dashboard.text  # no inline script: only the vendored file
    htmx = console.get("/console/static/htmx.min.js")
    assert hashlib.sha256(htmx.content).hexdigest() == SHA256


def test_every_change_needs_the_session_csrf_token_from_this_origin(console: TestClient) -> None:
    csrf = sign_in(console, ADMIN_TOKEN)
    assert console.post("/console/connections", data=_form()).status_code == 403
    assert console.post("/console/connections", data=_form(csrf="wrong")).status_code == 403
    foreign = console.post(
        "/console/connections", data=_form(csrf=csrf), headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert _connections(console) == 0

    made = console.post("/console/connections", data=_form(csrf=csrf), follow_redirects=False)
    assert made.status_code == 303, made.text
    assert _connections(console) == 1
    audited = console.get("/audit", headers=ADMIN).json()["items"][0]
    assert audited["action"] == "POST /console/connections"
    assert audited["actor"] == f"admin:{hash_token(ADMIN_TOKEN)[:12]}"
    assert "password" in audited["fields"]
    assert "csrf" not in audited["fields"]
    assert planted("password") not in str(audited)


def test_a_viewer_sees_but_cannot_change(console: TestClient) -> None:
    created = console.post("/connections", json=imap_body(), headers=ADMIN).json()
    csrf = sign_in(console, VIEWER_TOKEN)
    listed = console.get("/console/connections")
    assert "Support inbox" in listed.text
    assert "Add connection" not in listed.text
    shown = console.get(f"/console/connections/{created['id']}")
    assert "Support inbox" in shown.text
    forms = re.findall(r'<form[^>]* action="([^"]+)"', shown.text)
    assert forms == ["/console/sign-out"]  # no button that would change anything
    for path in ("", "/enable", "/delete", "/test"):
        refused = console.post(f"/console/connections/{created['id']}{path}", data={"csrf": csrf})
        assert refused.status_code == 403, path
        assert "admin role" in refused.text
    assert console.post("/console/connections", data=_form(csrf=csrf)).status_code == 403
    assert console.get(f"/console/connections/{created['id']}/edit").status_code == 403
    assert _connections(console) == 1
    raw = console.get("/console/messages/1/raw")
    assert (raw.status_code, "reader or admin" in raw.text) == (403, True)


def test_form_errors_are_the_apis_words_next_to_their_fields(console: TestClient) -> None:
    csrf = sign_in(console, ADMIN_TOKEN)
    wrong = {"timeout_ms": "99999", "name": "", "host": "not a host!"}
    api = console.post("/connections", json=imap_body(**wrong), headers=ADMIN)
    assert api.status_code == 422
    rules = {e["field"]: e["rule"] for e in api.json()["errors"]}
    assert set(rules) == set(wrong)

    page = console.post("/console/connections", data=_form(csrf=csrf, **wrong))
    assert page.status_code == 422
    for field, rule in rules.items():
        shown = re.search(rf'<p class="field-error" id="f-{field}-error1">([^<]*)</p>', page.text)
        assert shown, f"no error under {field}"
        assert shown.group(1) == rule.replace("'", "&#39;")
        assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', page.text)
    assert planted("password") not in page.text  # a secret is never echoed back
    assert _connections(console) == 0


def test_signing_out_or_removing_the_token_ends_the_session(console: TestClient) -> None:
    csrf = sign_in(console, ADMIN_TOKEN)
    cookie = console.cookies.get("mailintake_console")
    out = console.post("/console/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    console.cookies.set("mailintake_console", cookie or "", path="/console")
    assert console.get("/console", follow_redirects=False).status_code == 303

    console.cookies.clear()
    sign_in(console, READER_TOKEN)
    assert console.get("/console", follow_redirects=False).status_code == 200
    app = console.app
    app.state.tokens = TokenTable([f"admin:{hash_token(ADMIN_TOKEN)}"])  # type: ignore[attr-defined]
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_the_list_searches_sorts_and_pages(console: TestClient) -> None:
    for i in range(55):
        body = imap_body(name=f"box {i:02d}", host=f"imap{i % 3}.example.com", username=f"u{i}")
        assert console.post("/connections", json=body, headers=ADMIN).status_code == 201
    sign_in(console, VIEWER_TOKEN)
    first = console.get("/console/connections")
    assert "1–50 of 55" in first.text
    assert "box 00" in first.text
    assert "box 54" not in first.text
    second = console.get("/console/connections", params={"offset": 50})
    assert "box 54" in second.text
    assert "box 00" not in second.text
    reversed_ = console.get("/console/connections", params={"sort": "-name"})
    assert reversed_.text.index("box 54") < reversed_.text.index("box 53")
    found = console.get("/console/connections", params={"q": "IMAP2.example"})
    assert "18 in all" in found.text
    api = console.get("/connections", params={"q": "imap2.example", "sort": "-name"}, headers=ADMIN)
    assert api.json()["items"][0]["name"] == "box 53"


def test_each_connection_shows_whether_it_is_watched_since_when_and_why_not(
    console: TestClient, settings: Settings
) -> None:
    ids: dict[str, str] = {}
    for name, push in (
        ("Watched", "auto"),
        ("Retrying", "auto"),
        ("Silent", "auto"),
        ("Off", "off"),
    ):
        made = console.post("/connections", json=imap_body(name=name, push=push), headers=ADMIN)
        ids[name] = made.json()["id"]
        enabled = console.post(
            f"/connections/{ids[name]}/enable", json=WITHOUT_ESTIMATE, headers=ADMIN
        )
        assert enabled.status_code == 200, enabled.text
    reports = {  # as the watcher reports them; "Silent" has none, "Off" is watched against its push
        "Watched": ("watching", None, datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),
        "Retrying": (
            "retrying",
            "timeout: no answer to IDLE",
            datetime(2026, 3, 4, 6, 0, tzinfo=UTC),
        ),
        "Off": ("watching", None, datetime(2026, 3, 4, 7, 0, tzinfo=UTC)),
    }
    engine = make_engine(settings)
    with make_session_factory(engine)() as session, session.begin():
        for name, (state, reason, since) in reports.items():
            session.add(
                ConnectionWatch(
                    connection_id=uuid.UUID(ids[name]),
                    state=state,
                    method="imap_idle",
                    since=since,
                    reason=reason,
                    holder="watcher-1",
                    confirmed_at=datetime.now(UTC),
                )
            )
    engine.dispose()
    sign_in(console, VIEWER_TOKEN)

    def section(name: str) -> str:
        page = console.get(f"/console/connections/{ids[name]}")
        assert page.status_code == 200, page.text
        found = re.search(
            r'<section aria-labelledby="watch-title">(.*?)</section>', page.text, re.S
        )
        assert found, "no push section"
        return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())

    watched = section("Watched")
    assert "Push watched" in watched
    assert "Watched yes" in watched
    assert "Method IMAP IDLE Since 2026-03-04 05:06:07 UTC" in watched
    assert "Why not" not in watched
    retrying = section("Retrying")
    assert "not watched (retrying)" in retrying
    assert "Since 2026-03-04 06:00:00 UTC" in retrying
    assert "Why not timeout: no answer to IDLE" in retrying
    assert "Why not no watcher reports on it" in section("Silent")
    off = section("Off")
    assert "Watched no" in off
    assert "Why not push is off for this connection: interval polls only" in off

    rows = console.get("/console/connections").text.split("<tbody>")[1]
    cell = r'<td data-label="Name"><a [^>]*>([^<]+)</a>.*?<td data-label="Push">(.*?)</td>'
    cells = dict(re.findall(cell, rows, re.S))
    assert set(cells) == set(ids)
    assert 'class="badge ok">watched<' in cells["Watched"]
    assert "IMAP IDLE, since 2026-03-04 05:06:07 UTC" in cells["Watched"]
    assert "timeout: no answer to IDLE" in cells["Retrying"]
    assert "no watcher reports on it" in cells["Silent"]
    assert 'class="badge off">not watched<' in cells["Off"]

    sign_in(console, ADMIN_TOKEN)
    edit = console.get(f"/console/connections/{ids['Off']}/edit").text
    assert '<option value="off" selected>' in edit
    pop3 = console.get("/console/connections/new", params={"protocol": "pop3"}).text
    assert 'id="f-push"' not in pop3  # POP3 cannot announce new mail


def test_the_form_follows_the_protocol_and_an_edit_keeps_the_password_unseen(
    console: TestClient,
) -> None:
    csrf = sign_in(console, ADMIN_TOKEN)
    microsoft = console.get("/console/connections/new", params={"protocol": "microsoft_oauth2"})
    for host in ("outlook.office.de", "partner.outlook.cn"):
        assert f'<option value="{host}">' in microsoft.text
    assert 'id="f-transport"' in microsoft.text
    assert 'id="f-password"' not in microsoft.text
    graph = console.post(
        "/console/connections/form",
        data={"csrf": csrf, "protocol": "microsoft_oauth2", "transport": "graph", "name": "M"},
    )
    assert 'id="f-host"' not in graph.text
    assert 'id="f-folder"' not in graph.text
    assert 'value="M"' in graph.text  # what was typed stays
    pop3 = console.post(
        "/console/connections/form", data={"csrf": csrf, "protocol": "pop3", "encryption": "none"}
    )
    assert 'placeholder="110"' in pop3.text
    assert 'id="f-folder"' not in pop3.text

    made = console.post("/connections", json=imap_body(folder="Archive"), headers=ADMIN).json()
    edit = console.get(f"/console/connections/{made['id']}/edit")
    assert "Change password" in edit.text
    assert planted("password") not in edit.text
    fields = {**_form(csrf=csrf, protocol="pop3"), "password": ""}
    refused = console.post(f"/console/connections/{made['id']}", data=fields)
    assert refused.status_code == 422
    assert "password is required again because protocol" in refused.text
    fields["password"] = planted("new-password")
    saved = console.post(f"/console/connections/{made['id']}", data=fields, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert (
        planted("new-password") not in console.get(f"/console/connections/{made['id']}/edit").text
    )
    now = console.get(f"/connections/{made['id']}", headers=ADMIN).json()
    assert (now["protocol"], now["folder"], now["has_password"]) == ("pop3", None, True)


def test_the_log_filters_by_connection_outcome_and_time(
    console: TestClient, settings: Settings
) -> None:
    made = console.post("/connections", json=imap_body(), headers=ADMIN).json()
    engine = make_engine(settings)
    with make_session_factory(engine)() as session, session.begin():
        for hour, outcome in ((1, "ok"), (2, "failed"), (3, "failed")):
            session.add(
                PollLog(
                    poll_id=uuid.uuid4(),
                    connection_id=uuid.UUID(made["id"]),
                    started_at=datetime(2026, 1, 1, hour, tzinfo=UTC),
                    outcome=outcome,
                    error="refused" if outcome == "failed" else None,
                )
            )
    engine.dispose()
    sign_in(console, VIEWER_TOKEN)

    def rows(**params: str) -> int:
        page = console.get("/console/log", params={"connection": made["id"], **params})
        assert page.status_code == 200, page.text
        return int(page.text.count('<td data-label="Started">'))

    assert rows() == 3
    assert rows(outcome="failed") == 2
    assert rows(outcome="failed", since="2026-01-01T02:30") == 1
    assert rows(until="2026-01-01T02:00") == 1
    assert rows(connection=str(uuid.uuid4())) == 0
    assert console.get("/console/log", params={"since": "yesterday"}).status_code == 422
    for bad in ({"outcome": "ok\x00"}, {"since": "2026-01-01\x00"}, {"connection": "x\x00"}):
        assert console.get("/console/log", params=bad).status_code == 422, bad
    searched = console.get("/console/connections", params={"q": "a\x00b"})
    assert searched.status_code == 422
    assert "without control characters" in searched.text
