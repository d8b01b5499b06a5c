"""Promises 1 and 2 through outages and restarts, against real Dovecot, PostgreSQL and the
broker: PostgreSQL stopped for 30 s mid-ingestion; every service stopped (SIGTERM) and killed
(SIGKILL) in turn during a 10,000-message ingestion across 20 mailboxes; a fetcher stopped in
the middle of a long poll. Each ends with every seeded message stored exactly once, and at
no moment is a message deleted from its server before it was committed."""

from __future__ import annotations

import json
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from imapclient import IMAPClient

from mailintake_shared.settings import Settings
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.proxy import Fault, FaultProxy
from tests.integration.conftest import create_enabled

pytestmark = pytest.mark.integration


@dataclass
class Seeded:
    connection_id: str
    username: str
    password: str
    count: int
    delete: bool


class Mailboxes:
    """Mailboxes seeded with distinct messages; the checks of what the pipeline did to them."""

    def __init__(self, server: Dovecot, db: Database) -> None:
        self.server = server
        self.db = db
        self.seeded: list[Seeded] = []
        self._next = 0

    @property
    def total(self) -> int:
        return sum(s.count for s in self.seeded)

    def add(
        self,
        api: TestClient,
        count: int,
        *,
        delete: bool,
        port: int | None = None,
        size: int = 2048,
    ) -> Seeded:
        username, password = self.server.add_user(password=f"pw-{len(self.seeded)}-{self._next}")
        first, self._next = self._next, self._next + count
        messages = (make_message(i, size=size) for i in range(first, first + count))
        self.server.seed(username, messages)
        box = Mailbox(self.server, username, password)
        overrides: dict[str, Any] = {"after_download": "delete"} if delete else {}
        if port is not None:
            overrides["port"] = port
        connection_id = create_enabled(api, box, **overrides)
        seeded = Seeded(connection_id, username, password, count, delete)
        self.seeded.append(seeded)
        return seeded

    def inbox_size(self, seeded: Seeded) -> int:
        context = ssl.create_default_context(cafile=str(self.server.pki.ca_pem))
        port = self.server.ports.imaps
        with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=context) as client:
            client.login(seeded.username, seeded.password)
            return int(client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"])

    def stored(self) -> dict[str, int]:
        rows = self.db.rows("SELECT connection_id, count(*) FROM messages GROUP BY connection_id")
        return {str(row[0]): int(row[1]) for row in rows}

    def assert_nothing_deleted_before_its_commit(self) -> None:
        """Read the servers first, then the database (which only grows): a message missing
        from a server must be committed already."""
        deleted = {s.connection_id: s.count - self.inbox_size(s) for s in self.seeded if s.delete}
        stored = self.stored()
        for connection_id, count in deleted.items():
            assert count <= stored.get(connection_id, 0), (connection_id, count, stored)

    def assert_exactly_once(self) -> None:
        stored = self.stored()
        assert stored == {s.connection_id: s.count for s in self.seeded}
        assert self.db.distinct_messages() == self.total  # every seeded Message-ID once
        for seeded in self.seeded:
            if seeded.delete:
                assert self.inbox_size(seeded) == 0


@pytest.fixture
def mailboxes(dovecot: Dovecot, db: Database) -> Mailboxes:
    return Mailboxes(dovecot, db)


def _wait_for_count(db: Database, count: int, *, timeout_s: float, message: str) -> None:
    wait_until(lambda: db.message_count() >= count, timeout_s=timeout_s, message=message)


def _wait_for_all(mailboxes: Mailboxes, *, timeout_s: float) -> None:
    total = mailboxes.total
    _wait_for_count(mailboxes.db, total, timeout_s=timeout_s, message=f"all {total} stored")
    time.sleep(2)  # anything late (a duplicate) would show now


def _restart_and_rejoin(pipeline: Pipeline, service: str, logs: Path) -> None:
    """Start ``service`` again and wait until it is back at work, as a rolling restart waits
    for readiness: a consumer back in its group (partitions assigned), the API answering.

    One disruption at a time also keeps clear of a fault of the test broker (Tansu): a
    rebalance whose leader leaves in the middle of it never completes there, where Kafka's
    coordinator drops the leader after the rebalance timeout."""
    log = logs / f"{service.replace(':', '-')}.log"
    seen = log.stat().st_size if log.exists() else 0
    pipeline.start(service)
    if service == "config-api":
        wait_until(lambda: _answers(pipeline, service), timeout_s=60, message="API ready")
        return

    def assigned() -> bool:
        lines = log.read_bytes()[seen:].decode(errors="replace").splitlines()
        return any(
            '"partitions assigned"' in line and '"partitions": []' not in line for line in lines
        )

    wait_until(
        assigned,
        timeout_s=60,
        message=f"{service} back in its consumer group",
    )


def _answers(pipeline: Pipeline, service: str) -> bool:
    try:
        return pipeline.http_get(service, "/readyz") == 200
    except OSError:
        return False  # not listening yet


def test_postgres_stopped_for_30_s_mid_ingestion(
    pipeline_settings: Settings, postgres: Any, mailboxes: Mailboxes, tmp_path: Path
) -> None:
    if not hasattr(postgres, "start_server"):
        pytest.skip("PostgreSQL in a container: this test stops and starts a local cluster")
    pipeline = Pipeline(pipeline_settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    try:
        with api_client(pipeline_settings) as api:
            for i in range(3):
                mailboxes.add(api, 1000, delete=i == 0)
        wait_until(lambda: mailboxes.db.message_count() >= 300, timeout_s=120, message="under way")
        mailboxes.assert_nothing_deleted_before_its_commit()
        committed = mailboxes.stored()
        postgres.stop("fast")
        try:
            deadline = time.monotonic() + 30
            wait_until(
                lambda: pipeline.http_get("store", "/readyz") == 503,
                timeout_s=20,
                message="the store reports the database out of reach",
            )
            while time.monotonic() < deadline:
                # Nothing can commit now, so nothing more may be deleted.
                for seeded in mailboxes.seeded:
                    if seeded.delete:
                        deleted = seeded.count - mailboxes.inbox_size(seeded)
                        assert deleted <= committed.get(seeded.connection_id, 0)
                time.sleep(2)
            pipeline.assert_running()  # every service waits it out
        finally:
            postgres.start_server()
        assert mailboxes.db.message_count() < mailboxes.total, "finished before the outage"
        _wait_for_all(mailboxes, timeout_s=240)
        mailboxes.assert_exactly_once()
        assert pipeline.http_get("store", "/readyz") == 200
        pipeline.assert_running()
    finally:
        pipeline.stop_all()


def test_every_service_stopped_then_killed_in_turn_during_ingestion(
    pipeline_settings: Settings, mailboxes: Mailboxes, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(
        update={"poll_lease_seconds": 6.0, "poll_max_messages": 100}
    )
    services = ("scheduler", "fetcher", "fetcher:2", "store", "config-api")
    pipeline = Pipeline(settings, tmp_path / "logs").start(*services)
    try:
        disruptions = [(service, how) for service in services for how in ("stop", "kill")]
        with api_client(settings) as api:
            for i in range(6):
                mailboxes.add(api, 400, delete=i % 2 == 0)
            progress = 0
            for n, (service, how) in enumerate(disruptions, start=1):
                # New mail arrives before each disruption, so that every one of them falls
                # in the middle of ingestion, however quick the pipeline is.
                mailboxes.add(api, 300, delete=n % 2 == 0)
                progress += 100
                _wait_for_count(mailboxes.db, progress, timeout_s=120, message=f"before {n}")
                progress = mailboxes.db.message_count()
                assert progress < mailboxes.total, f"finished before disruption {n}"
                mailboxes.assert_nothing_deleted_before_its_commit()
                if how == "stop":
                    # uvicorn re-raises SIGTERM once its graceful shutdown is done
                    clean = (0, -signal.SIGTERM) if service == "config-api" else (0,)
                    assert pipeline.stop(service) in clean, f"{service} was killed after 30 s"
                else:
                    pipeline.kill(service)
                _restart_and_rejoin(pipeline, service, tmp_path / "logs")
        _wait_for_all(mailboxes, timeout_s=300)
        mailboxes.assert_exactly_once()
        wait_until(
            lambda: pipeline.http_get("config-api", "/readyz") == 200,
            timeout_s=30,
            message="the restarted API is ready",
        )
        pipeline.assert_running()
    finally:
        pipeline.stop_all()


def test_sigterm_ends_a_long_poll_early_and_keeps_what_it_published(
    pipeline_settings: Settings, mailboxes: Mailboxes, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(
        update={
            "poll_max_seconds": 300.0,
            "kafka_max_poll_interval_ms": 400_000,
            "fetch_batch_messages": 20,
        }
    )
    slow = FaultProxy(mailboxes.server.ports.imaps, default=Fault(delay_per_read_s=0.05)).start()
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    try:
        with api_client(settings) as api:
            seeded = mailboxes.add(api, 400, delete=True, port=slow.port, size=20_000)
        # One poll would take minutes over this link; stop the fetcher in the middle of it.
        wait_until(lambda: mailboxes.db.message_count() >= 20, timeout_s=120, message="under way")
        started = time.monotonic()
        assert pipeline.stop("fetcher") == 0  # by itself, within 30 s: it did not wait the poll
        stopped_after = time.monotonic() - started
        finished = [
            line
            for line in (tmp_path / "logs" / "fetcher.log").read_text().splitlines()
            if '"poll finished"' in line
        ]
        assert finished, "the poll under way did not finish"
        last = json.loads(finished[-1])
        assert (last["outcome"], last["more_pending"]) == ("ok", True), last
        mailboxes.assert_nothing_deleted_before_its_commit()
        wait_until(
            lambda: mailboxes.db.message_count() >= last["messages"],
            timeout_s=60,
            message="what the stopped poll published is stored",
        )
        assert mailboxes.db.message_count() < seeded.count, stopped_after
        pipeline.start("fetcher")
        _wait_for_all(mailboxes, timeout_s=240)
        mailboxes.assert_exactly_once()
    finally:
        pipeline.stop_all()
        slow.stop()


def test_a_fetcher_paused_past_its_lease_changes_nothing_when_it_wakes(
    pipeline_settings: Settings, mailboxes: Mailboxes, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(
        update={
            "poll_lease_seconds": 3.0,
            "poll_timeout_seconds": 8.0,
            "poll_max_seconds": 300.0,
            "kafka_max_poll_interval_ms": 400_000,
            "fetch_batch_messages": 20,
        }
    )
    slow = FaultProxy(mailboxes.server.ports.imaps, default=Fault(delay_per_read_s=0.05)).start()
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    try:
        with api_client(settings) as api:
            seeded = mailboxes.add(api, 200, delete=True, port=slow.port, size=20_000)
        _wait_for_count(mailboxes.db, 20, timeout_s=120, message="the first poll under way")
        pipeline.pause("fetcher")  # mid-poll, holding the lease
        pipeline.start("fetcher:2")  # takes the partitions, then the re-issued poll
        _wait_for_all(mailboxes, timeout_s=180)
        mailboxes.assert_exactly_once()  # everything deleted, by the new owner
        pipeline.resume("fetcher")
        wait_until(
            lambda: (
                "records of a fetcher that lost its lease dropped"
                in (tmp_path / "logs" / "store.log").read_text()
            ),
            timeout_s=60,
            message="what the woken fetcher published is dropped by the store",
        )
        wait_until(
            lambda: '"lease lost"' in (tmp_path / "logs" / "fetcher.log").read_text(),
            timeout_s=30,
            message="the woken fetcher noticed",
        )
        time.sleep(2)
        assert mailboxes.stored() == {seeded.connection_id: seeded.count}
        pipeline.assert_running()
    finally:
        pipeline.resume("fetcher")
        pipeline.stop_all()
        slow.stop()
