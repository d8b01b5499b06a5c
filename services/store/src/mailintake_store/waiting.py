"""Saying that downloaded mail waits for the store: topic ``store.waiting``.

When a batch cannot be written (the database refuses writes, is out of reach, its disk is
full) the database cannot record it, so the store says it on Kafka: a ``StoreWaiting`` with
the reason for every connection with records in the batch, at every retry, and a tombstone
once the connection's records are written. A store process also clears each connection the
first time it writes its records, so that the report of a process that is gone (or of a
partition that moved to another store) does not linger. The config API reads the topic into
each connection's status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from mailintake_shared.cloudevents import Headers, headers, written_headers
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import PollResult, StoreWaiting
from mailintake_shared.fetched import FetchedPart
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.topics import Topic, record_key, topic_name

log = get_logger(__name__)


def failure_reason(error: BaseException) -> str:
    """The database's own words (a driver error's first line: no SQL, no values), or the
    error's type and first line."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return (lines[0] if lines else type(original).__name__)[:500]


class WaitingReports:
    def __init__(self, producer: ReliableProducer, topic_prefix: str) -> None:
        self._producer = producer
        self._prefix = topic_prefix
        self._topic = topic_name(topic_prefix, Topic.STORE_WAITING)
        self._since: dict[uuid.UUID, datetime] = {}  # connections reported waiting
        self._written: set[uuid.UUID] = set()  # connections written by this process

    def failed(self, events: Iterable[FetchedPart | PollResult], error: BaseException) -> None:
        """The batch of ``events`` could not be written: report each of its connections."""
        reason, now = failure_reason(error), utcnow()
        for connection_id in _connections(events):
            since = self._since.setdefault(connection_id, now)
            report = StoreWaiting(connection_id=connection_id, reason=reason, since=since, at=now)
            self._send(connection_id, report.to_bytes(), headers(report, self._prefix))

    def written(self, events: Iterable[FetchedPart | PollResult]) -> None:
        """The batch was written: clear what was reported (or may have been, by another)."""
        now = utcnow()
        for connection_id in _connections(events):
            if connection_id in self._since or connection_id not in self._written:
                self._send(
                    connection_id, None, written_headers(self._prefix, str(connection_id), now)
                )
                self._since.pop(connection_id, None)
                self._written.add(connection_id)

    def _send(self, connection_id: uuid.UUID, value: bytes | None, found: Headers) -> None:
        try:  # best effort, unacknowledged: the write path does not wait for it
            self._producer.send(self._topic, record_key(connection_id), value, found)
        except Exception as exc:
            log.warning("store.waiting not sent", connection_id=str(connection_id), error=str(exc))


def _connections(events: Iterable[FetchedPart | PollResult]) -> set[uuid.UUID]:
    return {e.connection_id if isinstance(e, PollResult) else e.chunk.connection_id for e in events}
