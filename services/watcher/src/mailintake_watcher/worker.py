"""The watcher's worker: the connections it owns, from Kafka, watched on an asyncio loop.

Threads: this one consumes the compacted ``connections`` topic in the ``watcher`` consumer
group (replicas split its partitions; each assigned partition is read from its start and
folded by key, the highest version winning) and hands the changes to the ``Supervisor`` on
the event loop's thread, where every watch runs; a third thread publishes the poll requests.
Nothing is committed: the topic is the state, read again on every assignment. A partition
that goes to another replica is handed over as soon as the new assignment is known.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.range import RangePartitionAssignor
from pydantic import ValidationError

from mailintake_shared.checks import broker_ok, database_ok
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.domain import ConnectionView
from mailintake_shared.events import ConnectionState, decode
from mailintake_shared.kafka import ReliableProducer, ensure_topics, make_consumer
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name
from mailintake_shared.watch import STALE_AFTER_HEARTBEATS
from mailintake_watcher.claims import Claims
from mailintake_watcher.repository import WatchRepository
from mailintake_watcher.requester import PollRequester
from mailintake_watcher.supervisor import Supervisor
from mailintake_watcher.watch import WatchContext

log = get_logger(__name__)
SERVICE = "watcher"
_HANDOVER_S = 30.0
# asyncio's TLS transport gives every connection a receive buffer of 256 KiB (Python 3.11):
# a quarter of a gigabyte for a thousand idle sessions. What an idle session receives is a
# few short lines, and the SSL object reassembles TLS records from pieces of any size, so
# 2 KiB does: under 50 KB per watched mailbox instead of 300 (``make bench``, row 12).
TLS_READ_BYTES = 2 * 1024


class _Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    """A rebalance revokes every partition, then assigns the new set: only the partitions
    that did not come back are handed over, so a rejoin (after a pause, say) does not stop
    and restart every watch. Until then the watches go on: their claims keep the new owner
    waiting, never watching at the same time."""

    def __init__(self, worker: WatcherWorker) -> None:
        self._worker = worker
        self._owned: set[int] = set()

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass  # decided once the new assignment is known

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = {tp.partition for tp in assigned}
        self._worker.hand_over(self._owned - partitions)
        self._owned = partitions
        if assigned:
            self._worker.consumer.seek_to_beginning(*assigned)
        log.info("partitions assigned", partitions=sorted(partitions))


class WatcherWorker:
    def __init__(self, settings: Settings) -> None:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BYTES  # this process's sessions
        self._settings = settings
        self._engine = make_engine(settings)
        sessions = make_session_factory(self._engine)
        box = SecretBox(settings.encryption_keys)
        network = NetworkPolicy.of(settings.outbound_allow_cidrs, settings.outbound_deny_cidrs)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        repository = WatchRepository(
            sessions,
            box,
            TokenStore(sessions, box, settings),
            network,
            holder,
            stale_after_s=STALE_AFTER_HEARTBEATS * settings.watch_heartbeat_seconds,
        )
        if settings.create_topics:
            ensure_topics(settings)
        self._producer = ReliableProducer(settings, SERVICE)
        self._requester = PollRequester(settings, self._producer)
        self._context = WatchContext(
            settings=settings,
            repository=repository,
            claims=Claims(
                self._engine, settings.max_sessions_per_host, settings.max_sessions_per_account
            ),
            requester=self._requester,
            blocking=ThreadPoolExecutor(4, thread_name_prefix="watcher-blocking"),
            claiming=ThreadPoolExecutor(1, thread_name_prefix="watcher-claims"),
            remote=ThreadPoolExecutor(4, thread_name_prefix="watcher-graph"),
        )
        self._supervisor = Supervisor(self._context)
        self._topic = topic_name(settings.topic_prefix, Topic.CONNECTIONS)
        self.consumer: KafkaConsumer = make_consumer(
            settings, SERVICE, [], partition_assignment_strategy=[RangePartitionAssignor]
        )
        self.consumer.subscribe([self._topic], listener=_Handover(self))
        self._views: dict[uuid.UUID, ConnectionView] = {}
        self._partition_of: dict[uuid.UUID, int] = {}
        self._loop = asyncio.new_event_loop()

    def readiness(self) -> Mapping[str, bool]:
        return {
            "broker": broker_ok(self.consumer),
            "database": database_ok(self._engine),
            "requests": self._requester.healthy,
        }

    def run(self, stop: threading.Event) -> None:
        stopping = asyncio.Event()
        watching = threading.Thread(
            target=self._loop.run_until_complete,
            args=(self._supervisor.run(stopping),),
            name="watches",
        )
        requesting = threading.Thread(target=self._requester.run, args=(stop,), name="requests")
        watching.start()
        requesting.start()
        try:
            while not stop.is_set():
                polled = self.consumer.poll(timeout_ms=500, max_records=5000)
                self.fold([r for records in polled.values() for r in records])
        finally:
            self._loop.call_soon_threadsafe(stopping.set)
            watching.join()
            stop.set()
            requesting.join()

    def fold(self, records: list[ConsumerRecord]) -> None:
        """Connection states into the views this replica owns; the changes to the watches."""
        changed: dict[uuid.UUID, ConnectionView] = {}
        removed: set[uuid.UUID] = set()
        for record in records:
            try:
                connection_id = uuid.UUID(record.key.decode())
                if record.value is None:
                    self._views.pop(connection_id, None)
                    self._partition_of.pop(connection_id, None)
                    changed.pop(connection_id, None)
                    removed.add(connection_id)
                    continue
                view = decode(ConnectionState, record.value).connection
            except (ValidationError, ValueError, AttributeError) as exc:
                log.warning("connection record skipped", offset=record.offset, error=str(exc))
                continue
            known = self._views.get(view.id)
            if known is None or view.version >= known.version:
                self._views[view.id] = view
                self._partition_of[view.id] = record.partition
                changed[view.id] = view
                removed.discard(view.id)
        if changed or removed:
            self._loop.call_soon_threadsafe(
                self._supervisor.apply, list(changed.values()), list(removed)
            )

    def hand_over(self, partitions: set[int]) -> None:
        """These partitions went to another replica: stop watching their connections."""
        gone = [cid for cid, partition in self._partition_of.items() if partition in partitions]
        for connection_id in gone:
            del self._partition_of[connection_id]
            self._views.pop(connection_id, None)
        if not gone or not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._supervisor.hand_over(gone), self._loop)
        try:
            future.result(timeout=_HANDOVER_S)
        except Exception as exc:  # the other replica waits for the claims: no double watch
            log.warning("hand-over not finished in time", error=str(exc))

    def close(self) -> None:
        self.consumer.close()
        self._producer.close()
        self._context.blocking.shutdown(wait=True)
        self._context.remote.shutdown(wait=True)
        self._context.claiming.submit(self._context.claims.close).result()
        self._context.claiming.shutdown(wait=True)
        self._loop.close()
        self._engine.dispose()


def build(settings: Settings) -> WatcherWorker:
    return WatcherWorker(settings)
