"""A per-account session budget across fetchers: a Dovecot that allows 2 connections per user
and IP, 9 connections to the same account and 3 fetchers polling them at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from kafka.partitioner.default import murmur2

from tests.api import WITHOUT_ESTIMATE
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.proxy import Fault, FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_dovecot() -> Iterator[Dovecot]:
    server = Dovecot(connections_per_user=2).start()
    yield server
    server.destroy()


def test_no_poll_hits_the_servers_connection_limit(
    pipeline: Pipeline, api: TestClient, db: Database, strict_dovecot: Dovecot
) -> None:
    user, password = strict_dovecot.add_user(password=uuid.uuid4().hex)
    strict_dovecot.seed(user, (make_message(i, size=20_000) for i in range(100)))
    # A slow link: every poll lasts seconds, so the fetchers' polls surely overlap.
    slow = FaultProxy(strict_dovecot.ports.imap, default=Fault(delay_per_read_s=0.02)).start()
    pipeline.start("scheduler", "fetcher", "fetcher:2", "fetcher:3", "store")
    # Three connections on each partition of the due topic, so each fetcher gets three and
    # the three fetchers poll the account at once (connections on two partitions only
    # would never need the budget, and the test would prove nothing).
    partitions = pipeline.settings.topic_partitions
    per_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    while any(len(group) < 3 for group in per_partition.values()):
        created = api.post(
            "/connections",
            json={
                "name": f"same account {uuid.uuid4().hex[:6]}",
                "protocol": "imap",
                "host": "127.0.0.1",
                "port": slow.port,
                "encryption": "none",
                "username": user,
                "password": password,
                "interval_minutes": 1,
            },
        )
        cid = created.json()["id"]
        partition = (murmur2(cid.encode()) & 0x7FFFFFFF) % partitions
        if len(per_partition[partition]) < 3:
            per_partition[partition].append(cid)
    ids = [cid for group in per_partition.values() for cid in group]
    time.sleep(15)  # the three fetchers have joined their group and split its partitions
    for cid in ids:  # all at once (the tests' scheduler has no jitter)
        assert api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).status_code == 200
    try:
        wait_until(
            lambda: db.message_count() >= 100 * len(ids), timeout_s=240, message="all stored"
        )
    finally:
        slow.stop()
    failed = db.rows("SELECT error FROM poll_log WHERE outcome = 'failed'")
    assert failed == [], failed
    skipped = db.scalar("SELECT count(*) FROM poll_log WHERE outcome = 'skipped'")
    assert skipped > 0  # the budget did make polls wait
    assert db.message_count() == 100 * len(ids)
    pipeline.assert_running()
