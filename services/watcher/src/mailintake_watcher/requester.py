"""Poll requests for the connections whose server announced new mail: ``poll.requested``
events (reason ``push``), published from a thread of their own so that a slow or absent
broker never holds up the watches' event loop.

Requests are coalesced per connection while they wait (one poll serves any number of
announcements; the scheduler also serves one right after a poll in flight), and kept until
the broker acknowledges them: a broker outage delays them, it loses none.
"""

from __future__ import annotations

import threading
import uuid

from mailintake_shared.cloudevents import headers
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import PollReason, PollRequested
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name
from mailintake_shared.watch import WatchMethod
from mailintake_watcher.metrics import POLL_REQUESTS

log = get_logger(__name__)


class PollRequester:
    def __init__(self, settings: Settings, producer: ReliableProducer) -> None:
        self._topic = topic_name(settings.topic_prefix, Topic.POLL_REQUESTED)
        self._prefix = settings.topic_prefix
        self._producer = producer
        self._pending: dict[uuid.UUID, WatchMethod] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.healthy = True

    def request(self, connection_id: uuid.UUID, method: WatchMethod) -> None:
        """Ask for a poll of the connection (thread-safe, never blocks)."""
        with self._lock:
            self._pending[connection_id] = method
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Publish what is pending until ``stop`` (then once more); a failed batch is tried
        again."""
        backoff = 0.5
        while not stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, {}
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

    def _publish(self, batch: dict[uuid.UUID, WatchMethod]) -> None:
        now = utcnow()
        events = [
            PollRequested(connection_id=connection_id, requested_at=now, reason=PollReason.PUSH)
            for connection_id in batch
        ]
        futures = [
            self._producer.send(
                self._topic,
                str(event.connection_id).encode(),
                event.to_bytes(),
                headers(event, self._prefix, service="watcher"),
            )
            for event in events
        ]
        self._producer.settle(futures, timeout_s=30)
        for method in batch.values():
            POLL_REQUESTS.labels(method.value).inc()
        log.debug("poll requests published", connections=len(batch))
