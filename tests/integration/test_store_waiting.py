"""Mail the store cannot write shows where operators look: the connection's status and
``mailintake status`` say "downloaded, waiting for the store: <reason>" while a real
PostgreSQL refuses the store's writes (its sessions read-only, as after a failover to a
standby), and the mail stays on the server until it is stored, exactly once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from mailintake_shared.settings import Settings
from tests.api import ADMIN, WITHOUT_ESTIMATE, served
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.integration.conftest import imap_connection_body, server_flags
from tests.integration.test_cli import Cli

pytestmark = pytest.mark.integration

# PostgreSQL's words; the statement it names is the store's first write (INSERT, nextval()).
REFUSAL = re.compile(
    r"downloaded, waiting for the store: cannot execute \S+ in a read-only transaction"
)


def _read_only(url: str) -> str:
    options = {"options": "-c default_transaction_read_only=on"}
    return make_url(url).update_query_dict(options).render_as_string(hide_password=False)


def test_mail_the_store_cannot_write_is_shown_waiting_then_stored_once(
    pipeline_settings: Settings, mailbox: Mailbox, db: Database, tmp_path: Path
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(3)))
    refused = pipeline_settings.model_copy(
        update={"database_url": _read_only(pipeline_settings.database_url)}
    )
    services = Pipeline(pipeline_settings, tmp_path / "logs").start("scheduler", "fetcher")
    refusing = Pipeline(refused, tmp_path / "refusing" / "logs").start("store")
    try:
        with (
            served(pipeline_settings) as url,
            httpx.Client(base_url=url, headers=ADMIN, timeout=60) as api,
        ):
            cid = api.post("/connections", json=imap_connection_body(mailbox)).json()["id"]
            enabled = api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE)
            assert enabled.status_code == 200, enabled.text

            def status() -> dict[str, object]:
                shown: dict[str, object] = api.get(f"/connections/{cid}").json()["status"]
                return shown

            waiting = wait_until(
                lambda: status()["waiting_for_store"],
                timeout_s=120,
                message="the status says the downloaded mail waits for the store",
            )
            assert REFUSAL.fullmatch(str(waiting)), waiting
            assert status()["waiting_since"] is not None
            listed = Cli(url).run("status", "--json", ok=False)
            assert listed.returncode == 1  # a problem, as a failing connection is
            [row] = json.loads(listed.stdout)["items"]
            assert row["waiting_for_store"] == waiting
            assert "downloaded, waiting for the store" in Cli(url).run("status", ok=False).stdout
            # Nothing is lost meanwhile: the mail is on the server, unread, and not stored.
            assert db.message_count() == 0
            assert server_flags(mailbox) == (3, 0)

            refusing.stop_all()
            services.start("store")  # the database takes the store's writes again
            wait_until(
                lambda: db.message_count() == 3 and status()["waiting_for_store"] is None,
                timeout_s=120,
                message="stored, and the status no longer says it waits",
            )
            time.sleep(2)  # a duplicate would show now
            assert db.message_count() == 3
            assert db.distinct_messages() == 3
    finally:
        refusing.stop_all()
        services.stop_all()
