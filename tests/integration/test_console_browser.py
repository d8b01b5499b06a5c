"""The web console in a real browser (Debian's Chromium, headless, through Playwright)
against the real config API, database, broker, pipeline and Dovecot: an operator signs in,
adds an IMAP connection with a mistake and sees the API's rule under the field, fixes it,
tests it (ticks), tests a wrong password (the failing step named), enables it with the
estimate, sees the mail arrive in the log and retries an item from the queue; a viewer can
change nothing, and a form without its CSRF token is refused. Each page is photographed
(``make screenshots`` refreshes the ones in ``docs/console/``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect
from sqlalchemy import select

from mailintake_config_api.incoming import EntryKind, remove
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import FailedMessage, Message
from mailintake_shared.settings import Settings
from tests.api import ADMIN, imap_body, served
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN, Mailbox
from tests.harness.browser import Screenshots, chromium, reload_until, unlabelled
from tests.harness.mail import make_message
from tests.harness.pipeline import Pipeline, wait_until
from tests.integration.test_cli import answers

pytestmark = pytest.mark.integration
expect.set_options(timeout=30_000)  # a shared 2-core machine: patience, not speed, is tested
DESKTOP: ViewportSize = {"width": 1100, "height": 760}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def shots(tmp_path: Path) -> Screenshots:
    return Screenshots(tmp_path / "screenshots")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    yield context.new_page()
    context.close()


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def _fail_one_stored_message(settings: Settings, connection_id: str) -> str:
    """As when the store refuses a download: the message is not stored, and waits in the
    queue (state failed) with the store's reason. Its server id."""
    engine = make_engine(settings)
    try:
        with make_session_factory(engine)() as session, session.begin():
            message = session.scalars(
                select(Message)
                .where(Message.connection_id == uuid.UUID(connection_id))
                .order_by(Message.id.desc())
            ).first()
            assert message is not None
            kept = FailedMessage(
                connection_id=message.connection_id,
                folder=message.folder,
                server_id=message.server_id,
                uidvalidity=message.uidvalidity,
                uid=message.uid,
                reason="the store refused it: SHA-256 mismatch (the chunks did not add up)",
                raw=bytes(message.raw),
            )
            remove(session, EntryKind.MESSAGE, message.id)
            session.add(kept)
            return message.server_id
    finally:
        engine.dispose()


def test_an_operator_adds_tests_enables_and_follows_a_mailbox(
    pipeline: Pipeline, mailbox: Mailbox, page: Page, browser: Browser, shots: Screenshots
) -> None:
    mailbox.server.seed(mailbox.username, [make_message(i) for i in range(3)])
    pipeline.start()
    base = f"http://127.0.0.1:{pipeline.ports['config-api']}"
    wait_until(lambda: answers(f"{base}/readyz"), timeout_s=60, message="the API answers")

    page.goto(f"{base}/console")
    shots(page, "sign-in")
    sign_in(page, base, ADMIN_TOKEN)

    # Add an IMAP connection with a mistake: the API's rule appears under the field.
    page.get_by_role("link", name="Connections", exact=True).click()
    page.get_by_role("link", name="Add connection").click()
    expect(page.get_by_label("Port", exact=True)).to_have_attribute("placeholder", "993")
    # The form changes with the protocol (and the default port with the encryption).
    page.get_by_label("Name", exact=True).fill("Support inbox")
    page.get_by_label("Protocol", exact=True).select_option("pop3")
    expect(page.get_by_label("Port", exact=True)).to_have_attribute("placeholder", "995")
    expect(page.get_by_label("Folder", exact=True)).to_have_count(0)
    page.get_by_label("Encryption", exact=True).select_option("none")
    expect(page.get_by_label("Port", exact=True)).to_have_attribute("placeholder", "110")
    page.get_by_label("Protocol", exact=True).select_option("microsoft_oauth2")
    expect(page.get_by_label("Transport", exact=True)).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_have_count(0)
    page.get_by_label("Transport", exact=True).select_option("graph")
    expect(page.get_by_label("Host", exact=True)).to_have_count(0)
    page.get_by_label("Protocol", exact=True).select_option("imap")
    page.get_by_label("Encryption", exact=True).select_option("ssl")
    expect(page.get_by_label("Folder", exact=True)).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Support inbox")
    page.get_by_label("Use a shared mailbox", exact=True).check()
    expect(page.get_by_label("Shared mailbox alias", exact=True)).to_be_visible()
    page.get_by_label("Use a shared mailbox", exact=True).uncheck()
    page.get_by_label("Host", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(mailbox.server.ports.imaps))
    page.get_by_text("TLS certificates").click()
    page.get_by_label("CA certificates to trust (PEM)", exact=True).fill(mailbox.server.pki.ca_text)
    page.get_by_label("Username", exact=True).fill(mailbox.username)
    page.get_by_label("Password", exact=True).fill(mailbox.password)
    page.get_by_label("Timeout (ms)", exact=True).fill("99999")
    page.get_by_role("button", name="Add connection").click()
    rule = page.locator("#f-timeout_ms-error1")
    expect(rule).to_have_text("timeout must be between 1 and 30000 ms (0 or blank for 30000)")
    expect(page.get_by_label("Timeout (ms)", exact=True)).to_have_attribute("aria-invalid", "true")
    assert unlabelled(page) == []
    shots(page, "add-connection-rule")

    # Fix it, test it before saving (the password typed is kept), then save.
    page.get_by_label("Timeout (ms)", exact=True).fill("5000")
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("heading", name="Connection test passed")).to_be_visible()
    expect(page.locator(".step.ok")).to_have_count(5)
    expect(page.locator(".step").last).to_contain_text("3 messages")
    shots(page, "add-connection-tested")
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("Connection created"))
    connection_id = page.url.rsplit("/", 1)[1]

    # A wrong password: the sign-in step fails, with the server's refusal.
    page.get_by_role("link", name="Edit").click()
    page.get_by_text("Change password").click()
    page.get_by_label("New password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("heading", name="Connection test failed")).to_be_visible()
    failed = page.locator(".step.failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text(f"Sign in as {mailbox.username}")
    expect(page.locator(".step.ok")).to_have_count(3)  # DNS, connect, TLS
    shots(page, "test-failed-step")
    page.get_by_role("link", name="Edit").click()
    page.get_by_text("Change password").click()
    page.get_by_label("New password", exact=True).fill(mailbox.password)
    page.get_by_role("button", name="Save changes").click()
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator(".step.ok")).to_have_count(5)
    shots(page, "connection-tested")

    # Enable: the estimate first, enabled only on confirmation.
    page.get_by_role("button", name="Enable", exact=True).click()
    expect(page.locator(".estimate")).to_contain_text("The first poll will download 3 messages")
    assert unlabelled(page) == []
    shots(page, "enable-estimate")
    page.get_by_role("button", name="Enable and download 3 messages").click()
    expect(page.get_by_role("status")).to_contain_text("Enabled: the first poll runs at once")

    # The mail arrives in the log.
    page.goto(f"{base}/console/log?view=messages&connection={connection_id}")
    stored = page.locator("tr.stored")
    reload_until(page, lambda: stored.count() == 3, timeout_s=90, what="3 messages stored")
    assert unlabelled(page) == []
    shots(page, "log-messages")
    page.get_by_role("link", name="Polls").click()
    expect(page.locator("tr.ok").first).to_be_visible()
    shots(page, "log-polls")

    # A message the store refused waits in the queue; a retry downloads it again.
    server_id = _fail_one_stored_message(pipeline.settings, connection_id)
    page.get_by_role("link", name="Queue").click()
    expect(page.locator("td", has_text="SHA-256 mismatch")).to_be_visible()
    assert unlabelled(page) == []
    shots(page, "queue")
    page.get_by_role("button", name=re.compile("^Retry failed")).click()
    expect(page.get_by_role("status")).to_have_text("Retried: downloaded again by the next poll.")
    expect(page.get_by_text("The queue is empty")).to_be_visible()
    page.goto(f"{base}/console/log?view=messages&connection={connection_id}")
    again = page.locator("tr.stored", has_text=server_id)
    reload_until(page, lambda: again.count() == 2, timeout_s=90, what="the retried message")

    # The dashboard counts it, the list finds it as you type, and a phone shows it too.
    page.get_by_role("link", name="Dashboard").click()
    # 3 stored, 1 of them set aside and stored again
    expect(page.locator(".figure").first).to_have_text(re.compile(r"^\s*3\s+in the last 24 h"))
    assert unlabelled(page) == []
    shots(page, "dashboard")
    page.get_by_role("link", name="Connections", exact=True).click()
    search = page.get_by_label("Search name, description, host and username", exact=True)
    search.press_sequentially("nothing like it")
    expect(page.get_by_text("No connection matches")).to_be_visible()
    search.fill("")
    search.press_sequentially("support")
    expect(page.get_by_role("link", name="Support inbox")).to_be_visible()
    expect(page.locator("span.badge.ok")).to_have_text("ok")
    assert unlabelled(page) == []
    shots(page, "connections")
    phone = browser.new_context(viewport=PHONE, storage_state=page.context.storage_state())
    small = phone.new_page()
    small.goto(f"{base}/console/connections")
    expect(small.get_by_role("link", name="Support inbox")).to_be_visible()
    shots(small, "connections-phone")
    phone.close()


def test_a_viewer_changes_nothing_and_no_form_goes_without_its_token(
    settings: Settings, page: Page, browser: Browser, shots: Screenshots
) -> None:
    with served(settings) as base, httpx.Client(base_url=base, headers=ADMIN) as api:
        made = api.post("/connections", json=imap_body())
        assert made.status_code == 201, made.text
        connection = made.json()["id"]
        sign_in(page, base, VIEWER_TOKEN)
        page.goto(f"{base}/console/connections/{connection}")
        expect(page.get_by_role("heading", name=re.compile("Support inbox"))).to_be_visible()
        expect(page.get_by_role("button", name="Enable")).to_have_count(0)
        expect(page.get_by_role("link", name="Edit")).to_have_count(0)
        shots(page, "viewer")
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        forced = page.evaluate(
            """async ([path, csrf]) => {
                 const answer = await fetch(path, {method: "POST",
                   headers: {"Content-Type": "application/x-www-form-urlencoded"},
                   body: "csrf=" + encodeURIComponent(csrf)});
                 return [answer.status, await answer.text()]; }""",
            [f"/console/connections/{connection}/delete", token],
        )
        assert forced[0] == 403
        assert "changes need the admin role; you are signed in as viewer" in forced[1]
        assert api.get(f"/connections/{connection}").status_code == 200

        admin = browser.new_context(viewport=DESKTOP).new_page()
        sign_in(admin, base, ADMIN_TOKEN)
        admin.goto(f"{base}/console/connections/{connection}")
        without_token = admin.evaluate(
            """async (path) => {
                 const answer = await fetch(path, {method: "POST",
                   headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: ""});
                 return [answer.status, await answer.text()]; }""",
            f"/console/connections/{connection}/delete",
        )
        assert without_token[0] == 403
        assert "security token is missing or wrong" in without_token[1]
        assert api.get(f"/connections/{connection}").status_code == 200
        admin.get_by_role("link", name="Delete").click()
        shots(admin, "delete-confirm")
        admin.get_by_role("button", name="Delete Support inbox").click()
        expect(admin.get_by_role("status")).to_have_text("Connection Support inbox deleted.")
        assert api.get(f"/connections/{connection}").status_code == 404
        admin.context.close()
