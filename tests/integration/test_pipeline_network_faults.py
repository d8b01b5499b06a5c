"""Mail servers that drop the connection mid-download, stall mid-response or crawl: a TCP
proxy of the tests' own between the fetcher and Dovecot. Every case ends with each message
stored exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.proxy import Fault, FaultProxy
from tests.integration.conftest import create_enabled, drain

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(mailbox: Mailbox) -> Iterator[FaultProxy]:
    running = FaultProxy(mailbox.server.ports.imap).start()
    yield running
    running.stop()


def test_cut_stalled_and_slow_links_store_everything_once(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox, proxy: FaultProxy
) -> None:
    sent = [make_message(i, size=20_000 if i % 10 else 300_000) for i in range(120)]
    mailbox.server.seed(mailbox.username, sent)
    proxy.plan(
        Fault(),  # the estimate, when enabling
        Fault(cut_after=600_000),  # the first poll loses its link mid-download
        Fault(stall_after=300_000, stall_s=5.0),  # the next one stalls past the time-out
        Fault(cut_after=1_500_000),
        Fault(delay_per_read_s=0.002),  # a slow link
    )
    pipeline.start("scheduler", "fetcher", "store")
    connection_id = create_enabled(
        api,
        mailbox,
        port=proxy.port,
        encryption="none",
        tls_ca_pem=None,
        timeout_ms=2000,
    )
    drain(api, connection_id, db, 120, timeout_s=240)
    wait_until(lambda: proxy.sessions >= 5, timeout_s=30, message="every fault served")
    assert db.message_count() == 120
    assert db.distinct_messages() == 120
    stored = {bytes(r.raw).replace(b"\r\n", b"\n") for r in db.rows("SELECT raw FROM messages")}
    assert stored == {m.replace(b"\r\n", b"\n") for m in sent}
    failed = db.scalar("SELECT count(*) FROM poll_log WHERE outcome = 'failed'")
    assert failed >= 2  # the faults did hit polls
    pipeline.assert_running()
