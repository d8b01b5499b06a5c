"""Dead-lettering: a record that cannot be processed is kept, with its reason, and skipped."""

from __future__ import annotations

import base64

from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from mailintake_shared.cloudevents import headers
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import DeadLetter
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.topics import Topic, topic_name

log = get_logger(__name__)
DEAD_LETTERED = Counter(
    "mailintake_dead_lettered_total", "Records sent to the dead-letter topic.", ["service"]
)


def dead_letter(
    producer: ReliableProducer, prefix: str, service: str, record: ConsumerRecord, reason: str
) -> None:
    """Publish ``record`` to the dead-letter topic and wait for the broker's acknowledgement
    (the caller commits the record's offset only after this returned)."""
    event = DeadLetter(
        service=service,
        reason=reason[:2000],
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        value_b64=base64.b64encode(record.value).decode() if record.value is not None else None,
        headers={name: _header_text(value) for name, value in record.headers or []},
        failed_at=utcnow(),
    )
    future = producer.send(
        topic_name(prefix, Topic.DEAD_LETTER), record.key, event.to_bytes(), headers(event, prefix)
    )
    producer.settle([future])
    DEAD_LETTERED.labels(service).inc()
    log.warning(
        "record dead-lettered",
        reason=reason[:500],
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )


def _header_text(value: bytes | None) -> str:
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()
