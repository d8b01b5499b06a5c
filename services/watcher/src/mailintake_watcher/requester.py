"""Poll requests for the connections whose server announced new mail: ``poll.requested``
events (reason ``push``), published from a thread of their own so that a slow or absent
broker never holds up the watches' event loop.

Requests are coalesced per connection while they wait (one poll serves any number of
announcements; the scheduler also serves one right after a poll in flight), at most one a
second per connection (a server announcing thousands of messages a second costs a request a
second, not one per broker round trip), and kept until the broker acknowledges them: a broker
outage delays them, it loses none.
"""

from __future__ import annotations

import threading
import time
import uuid

from mailintake_shared.cloudevents import headers
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import PollReason, PollRequested
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, record_key, topic_name
from mailintake_shared.watch import WatchMethod
from mailintake_watcher.metrics import POLL_REQUESTS

log = get_logger(__name__)
SPACING_S = 1.0  # between two requests for one connection


class PollRequester:
    def __init__(self, settings: Settings, producer: ReliableProducer) -> None:
        self._topic = topic_name(settings.topic_prefix, Topic.POLL_REQUESTED)
        self._prefix = settings.topic_prefix
        self._producer = producer
        self._pending: dict[uuid.UUID, WatchMethod] = {}
        self._sent: dict[uuid.UUID, float] = {}  # when, for those sent in the last SPACING_S
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.healthy = True

    def request(self, connection_id: uuid.UUID, method: WatchMethod) -> None:
        """Ask for a poll of the connection (thread-safe, never blocks)."""
        with self._lock:
            fresh = connection_id not in self._pending
            self._pending[connection_id] = method
        if fresh:  # one already waiting is woken for: a flood wakes nobody
            self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Publish what is pending until ``stop`` (then once more); a failed batch is tried
        again."""
        backoff, wait = 0.5, 1.0
        while not stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            batch, wait = self._due(time.monotonic())
            if not batch:
                continue
            try:
                self._publish(batch)
                self.healthy, backoff = True, 0.5
            except Exception as exc:
                self.healthy = False
                log.warning("poll requests not published; retrying", error=str(exc))
                with self._lock:
                    self._pending = {**batch, **self._pending}
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                self._wake.set()
        with self._lock:
            batch, self._pending = self._pending, {}
        if batch:
            try:
                self._publish(batch)
            except Exception as exc:  # the interval poll is the safety net
                log.warning("poll requests not published at shutdown", error=str(exc))

    def _due(self, now: float) -> tuple[dict[uuid.UUID, WatchMethod], float]:
        """The requests to send now (taken from the pending ones, and noted as sent), and how
        long until the next of the others may go."""
        self._sent = {cid: at for cid, at in self._sent.items() if now - at < SPACING_S}
        with self._lock:
            batch = {cid: m for cid, m in self._pending.items() if cid not in self._sent}
            for connection_id in batch:
                del self._pending[connection_id]
            later = [self._sent[cid] + SPACING_S - now for cid in self._pending]
        self._sent.update(dict.fromkeys(batch, now))
        return batch, min([1.0, *later])

    def _publish(self, batch: dict[uuid.UUID, WatchMethod]) -> None:
        now = utcnow()
        events = [
            PollRequested(connection_id=connection_id, requested_at=now, reason=PollReason.PUSH)
            for connection_id in batch
        ]
        futures = [
            self._producer.send(
                self._topic,
                record_key(event.connection_id),
                event.to_bytes(),
                headers(event, self._prefix, service="watcher"),
            )
            for event in events
        ]
        self._producer.settle(futures, timeout_s=30)
        for method in batch.values():
            POLL_REQUESTS.labels(method.value).inc()
        log.debug("poll requests published", connections=len(batch))
