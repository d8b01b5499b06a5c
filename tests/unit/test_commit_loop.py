"""The commit-after-work loop survives what a rebalance or an outage throws at it."""

from __future__ import annotations

import threading
from typing import Any

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaConnectionError, RebalanceInProgressError

from mailintake_shared.kafka import CommitAfterWorkLoop


class Record:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = "t", 0, offset


class FlakyConsumer:
    """Hands out one record per poll; its commits and polls fail now and then."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.offset = 0
        self.committed: list[int] = []
        self.commit_errors: list[Exception] = [RebalanceInProgressError(), CommitFailedError()]
        self.poll_errors: list[Exception] = [KafkaConnectionError()]

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        if self.poll_errors:
            raise self.poll_errors.pop()
        if self.offset >= 5:
            self.stop.set()
            return {}
        record = Record(self.offset)
        self.offset += 1
        return {("t", 0): [record]}

    def commit(self, offsets: dict[Any, Any]) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop()
        self.committed.extend(o.offset for o in offsets.values())

    def seek(self, tp: Any, offset: int) -> None:
        self.offset = offset

    def assignment(self) -> set[Any]:
        return {TopicPartition("t", 0)}


def test_commit_and_poll_failures_neither_stop_the_loop_nor_skip_work() -> None:
    stop = threading.Event()
    consumer = FlakyConsumer(stop)
    handled: list[int] = []
    loop = CommitAfterWorkLoop(
        consumer,
        lambda batch: handled.extend(r.offset for r in batch),
        stop=stop,
        retry_backoff_s=(0.01, 0.02),
    )
    loop.run()
    assert handled == [0, 1, 2, 3, 4]
    assert consumer.committed == [3, 4, 5]  # the first two commits failed, the rest landed
