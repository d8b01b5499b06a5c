"""Two scheduler replicas split the connections between them: no connection polled twice."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.api import WITHOUT_ESTIMATE, imap_body
from tests.harness.pipeline import Pipeline, wait_until

pytestmark = pytest.mark.integration


def _owned(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("mailintake_scheduler_connections "):
                return float(line.split()[1])
    return -1.0


def test_two_replicas_share_the_connections_without_double_polls(
    pipeline_settings: Settings, api: TestClient, tmp_path: object
) -> None:
    from pathlib import Path

    first = Pipeline(pipeline_settings, Path(str(tmp_path)) / "a").start("scheduler")
    second = Pipeline(pipeline_settings, Path(str(tmp_path)) / "b").start("scheduler")
    try:
        wait_until(
            lambda: (
                first.assigned() | second.assigned() == {0, 1, 2}
                and not first.assigned() & second.assigned()
                and second.assigned()
            ),
            timeout_s=90,
            message="the group settled with both replicas",
        )
        ids = []
        for i in range(30):
            created = api.post("/connections", json=imap_body(name=f"c{i}"))
            ids.append(created.json()["id"])
            api.post(f"/connections/{created.json()['id']}/enable", json=WITHOUT_ESTIMATE)
        api.app.state.resources.relay.flush()  # type: ignore[attr-defined]

        def polls() -> Counter[str]:
            records = read_topic_to_end(pipeline_settings, Topic.POLL_DUE)
            return Counter(json.loads(r.value)["connection_id"] for r in records)

        wait_until(lambda: len(polls()) == 30, timeout_s=60, message="every connection polled")
        a = _owned(first.ports["scheduler"])
        b = _owned(second.ports["scheduler"])
        assert a + b == 30
        assert a > 0
        assert b > 0
        counts = polls()
        assert set(counts) == set(ids)
        assert set(counts.values()) == {1}, counts
    finally:
        first.stop_all()
        second.stop_all()
