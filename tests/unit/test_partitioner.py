"""The producer's partitioner puts a keyed record where kafka-python's default (and the Java
client) would: consumers and the watcher's claims rely on ``murmur2(key)`` deciding it."""

from __future__ import annotations

import uuid

import pytest
from kafka.partitioner.default import DefaultPartitioner

from mailintake_shared.kafka import KeyHashCachingPartitioner


class Cluster:
    """The two questions a partitioner asks of kafka-python's cluster metadata."""

    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


@pytest.mark.parametrize("partitions", [1, 3, 6, 12, 64])
def test_keyed_records_go_where_the_default_partitioner_sends_them(partitions: int) -> None:
    cluster, ours, default = (
        Cluster(partitions),
        KeyHashCachingPartitioner(64),
        DefaultPartitioner(),
    )
    keys = [str(uuid.uuid4()).encode() for _ in range(500)] + [b"", b"a", b"ab", b"abc"]
    for _ in range(2):  # the second time from the remembered hashes (more keys than it keeps)
        for key in keys:
            expected = default.partition("t", key, key, b"v", b"v", cluster)
            assert ours.partition("t", key, key, b"v", b"v", cluster) == expected


def test_a_record_without_key_and_an_unknown_topic_are_the_default_partitioners() -> None:
    cluster, ours = Cluster(6), KeyHashCachingPartitioner()
    assert ours.partition("t", None, None, b"v", b"v", cluster) in range(6)
    with pytest.raises(ValueError, match="not found"):
        ours.partition("other", b"k", b"k", b"v", b"v", cluster)
