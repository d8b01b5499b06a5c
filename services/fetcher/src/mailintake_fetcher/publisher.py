"""The Kafka sink of a poll: every record keyed by connection id, on ``mail.fetched``."""

from __future__ import annotations

from uuid import UUID

from kafka.producer.future import FutureRecordMetadata

from mailintake_shared.cloudevents import Headers
from mailintake_shared.events import FetchedChunk, PollResult
from mailintake_shared.fetched import encode_part, encode_result
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.topics import Topic, topic_name


class KafkaSink:
    def __init__(self, producer: ReliableProducer, prefix: str, *, timeout_s: float = 35) -> None:
        self._producer = producer
        self._prefix = prefix
        self._topic = topic_name(prefix, Topic.MAIL_FETCHED)
        self._timeout_s = timeout_s
        self._pending: list[FutureRecordMetadata] = []

    def _send(self, key: UUID, value: bytes, headers: Headers) -> None:
        self._pending.append(self._producer.send(self._topic, str(key).encode(), value, headers))
        # Keep the acknowledgement list short: settle it now and then.
        if len(self._pending) >= 1000:
            self.flush()

    def message(self, chunk: FetchedChunk, data: bytes) -> None:
        self._send(chunk.connection_id, *encode_part(chunk, data, self._prefix))

    def result(self, result: PollResult) -> None:
        self._send(result.connection_id, *encode_result(result, self._prefix))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._producer.settle(pending, self._timeout_s)  # raises if the broker did not take one
