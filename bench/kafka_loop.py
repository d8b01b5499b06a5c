"""The scheduler's Kafka traffic without the scheduler: a floor for bench row 8.

``python -m bench.kafka_loop --bootstrap HOST:PORT --prefix P --connections N --interval S``
runs the scheduler's loop with nothing of the schedule in it: the same consumer (one group,
range assignment, the same three topics, offsets committed every tick), the same producer,
and one ``poll.due`` record, encoded once with its CloudEvents headers, sent for each
connection when it is due. A connection is due ``S`` seconds after its last
``poll.completed`` (at first, at a random moment within ``S``). No event is decoded, no id
made, no schedule kept: the CPU this process takes for the scheduler's rate of polls is what
kafka-python alone costs the scheduler. Runs until it is terminated.
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
import uuid
from datetime import UTC, datetime

from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import OffsetAndMetadata, TopicPartition

from mailintake_shared.cloudevents import headers
from mailintake_shared.events import PollDue, PollReason
from mailintake_shared.kafka import ReliableProducer, make_consumer
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True, help="seconds")
    args = parser.parse_args()
    settings = Settings(kafka_bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)
    consumer = make_consumer(
        settings,
        "scheduler",
        [Topic.CONNECTIONS, Topic.POLL_COMPLETED, Topic.POLL_REQUESTED],
        partition_assignment_strategy=[RangePartitionAssignor],
    )
    producer = ReliableProducer(settings, "scheduler")
    due_topic = topic_name(settings.topic_prefix, Topic.POLL_DUE)
    event = PollDue(
        connection_id=uuid.uuid4(),
        poll_id=uuid.uuid4(),
        reason=PollReason.SCHEDULED,
        issued_at=datetime.now(UTC),
    )
    value, found = event.to_bytes(), headers(event, settings.topic_prefix)
    start = time.monotonic()
    heap = [
        (start + random.random() * args.interval, str(uuid.uuid4()).encode())
        for _ in range(args.connections)
    ]
    heapq.heapify(heap)
    while True:
        polled = consumer.poll(timeout_ms=200, max_records=5000)
        now = time.monotonic()
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for records in polled.values():
            for record in records:
                heapq.heappush(heap, (now + args.interval, record.key))
                offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(
                    record.offset + 1, "", -1
                )
        keys = []
        while heap and heap[0][0] <= now:
            keys.append(heapq.heappop(heap)[1])
        if keys:
            producer.settle([producer.send(due_topic, key, value, found) for key in keys], 30)
        if offsets:
            consumer.commit(offsets)


if __name__ == "__main__":
    main()
