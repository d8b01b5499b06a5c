"""The Kafka sink of a poll: every record keyed by connection id, on ``mail.fetched``.

Small whole messages are gathered into batch records (``FetchedBatch``) of at most
``BATCH_MESSAGES`` messages and ``BATCH_BYTES`` bytes: per record, the Kafka client costs more
than a small message's own bytes (measured: about 160 µs of the fetcher's CPU a record
against 30 µs a message in batches of 100, and half the store's consuming CPU). A batch is
sent before any other record of the poll (a chunk of a large message, the poll's result), so
the records keep the poll's order; memory holds one batch at most.
"""

from __future__ import annotations

from uuid import UUID

from kafka.producer.future import FutureRecordMetadata

from mailintake_shared.cloudevents import Headers
from mailintake_shared.events import FetchedChunk, PollResult
from mailintake_shared.fetched import encode_batch, encode_part, encode_result
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.topics import Topic, record_key, topic_name

BATCH_MESSAGES = 100
# Under Kafka's default 1 MB record limit with the envelopes beside the bytes.
BATCH_BYTES = 640 * 1024


class KafkaSink:
    def __init__(self, producer: ReliableProducer, prefix: str, *, timeout_s: float = 35) -> None:
        self._producer = producer
        self._prefix = prefix
        self._topic = topic_name(prefix, Topic.MAIL_FETCHED)
        self._timeout_s = timeout_s
        self._pending: list[FutureRecordMetadata] = []
        self._batch: list[tuple[FetchedChunk, bytes]] = []
        self._batch_bytes = 0

    def _send(self, key: UUID, value: bytes, headers: Headers) -> None:
        self._pending.append(self._producer.send(self._topic, record_key(key), value, headers))
        # Keep the acknowledgement list short: settle it now and then.
        if len(self._pending) >= 1000:
            self._settle()

    def message(self, chunk: FetchedChunk, data: bytes) -> None:
        whole = chunk.chunk_index == 0 and chunk.final
        if whole and self._batch_bytes + len(data) > BATCH_BYTES:
            self._send_batch()
        if whole and len(data) <= BATCH_BYTES:
            self._batch.append((chunk, data))
            self._batch_bytes += len(data)
            if len(self._batch) >= BATCH_MESSAGES:
                self._send_batch()
            return
        self._send_batch()
        self._send(chunk.connection_id, *encode_part(chunk, data, self._prefix))

    def _send_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if len(batch) == 1:
            self._send(batch[0][0].connection_id, *encode_part(*batch[0], self._prefix))
        else:
            self._send(batch[0][0].connection_id, *encode_batch(batch, self._prefix))

    def result(self, result: PollResult) -> None:
        self._send_batch()
        self._send(result.connection_id, *encode_result(result, self._prefix))

    def flush(self) -> None:
        self._send_batch()
        self._settle()

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        self._producer.settle(pending, self._timeout_s)  # raises if the broker did not take one
