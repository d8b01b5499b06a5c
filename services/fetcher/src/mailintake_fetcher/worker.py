"""The fetcher's worker: poll.due → one poll → mail.fetched → commit the poll.due offset.

Chain: ``CommitAfterWorkLoop(max_records=1)`` → decode (bad → dead-letter) → load the
connection → ``ImapPoll.run`` or ``Pop3Poll.run`` → the poll's records acknowledged → offset
committed. A fetcher that dies mid-poll leaves the offset uncommitted: the poll runs again
elsewhere, and the store's dedup makes the repeat harmless.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from mailintake_fetcher.graph_poll import GraphPoll
from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.lease_keeper import LeaseKeeper
from mailintake_fetcher.poll import Budget, Poll, Sink
from mailintake_fetcher.pop3_poll import Pop3Poll
from mailintake_fetcher.publisher import KafkaSink
from mailintake_fetcher.repository import FetcherRepository
from mailintake_fetcher.slots import SessionSlots
from mailintake_shared.checks import consumer_readiness
from mailintake_shared.cloudevents import headers
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.types import utcnow
from mailintake_shared.deadletter import dead_letter
from mailintake_shared.domain import Transport
from mailintake_shared.events import PollDue, PollOutcome, PollRequested, PollResult, Resume, decode
from mailintake_shared.kafka import (
    CommitAfterWorkLoop,
    ReliableProducer,
    ensure_topics,
    make_consumer,
)
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, record_key, topic_name

log = get_logger(__name__)
SERVICE = "fetcher"
_POLLS: dict[Transport, type[Poll]] = {
    Transport.IMAP: ImapPoll,
    Transport.POP3: Pop3Poll,
    Transport.GRAPH: GraphPoll,
}


def budget_from(settings: Settings) -> Budget:
    return Budget(
        max_messages=settings.poll_max_messages,
        max_bytes=settings.poll_max_bytes,
        max_seconds=settings.poll_max_seconds,
        batch_messages=settings.fetch_batch_messages,
        chunk_bytes=settings.chunk_bytes,
        max_session_seconds=settings.poll_session_max_seconds,
        max_message_bytes=settings.max_message_bytes,
    )


class FetcherWorker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine = make_engine(settings)
        sessions = make_session_factory(self._engine)
        box = SecretBox(settings.encryption_keys)
        network = NetworkPolicy.of(settings.outbound_allow_cidrs, settings.outbound_deny_cidrs)
        tokens = TokenStore(sessions, box, settings)
        self._repository = FetcherRepository(sessions, box, tokens, network)
        if settings.create_topics:
            ensure_topics(settings)
        self._producer = ReliableProducer(settings, SERVICE)
        self._consumer: KafkaConsumer = make_consumer(settings, SERVICE, [Topic.POLL_DUE])
        self._budget = budget_from(settings)
        self._slots = SessionSlots(
            self._engine, settings.max_sessions_per_host, settings.max_sessions_per_account
        )
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._loop: CommitAfterWorkLoop | None = None
        self._stop = threading.Event()

    def readiness(self) -> Mapping[str, bool]:
        return consumer_readiness(self._engine, self._consumer, self._loop)

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop``; a poll under way when it is set ends after the message it is
        downloading (what was published is kept, the rest is the next poll's)."""
        self._stop = stop
        self._loop = CommitAfterWorkLoop(self._consumer, self.handle, stop=stop, max_records=1)
        self._loop.run()

    def handle(self, batch: list[ConsumerRecord]) -> None:
        for record in batch:
            try:
                due = decode(PollDue, record.value or b"")
            except ValidationError as exc:
                dead_letter(
                    self._producer,
                    self._settings.topic_prefix,
                    SERVICE,
                    record,
                    f"not a PollDue v1 event: {exc.errors()[:3]}",
                )
                continue
            self.poll(due, KafkaSink(self._producer, self._settings.topic_prefix))

    def poll(self, due: PollDue, sink: Sink) -> PollResult | None:
        if utcnow() - due.issued_at > timedelta(seconds=self._settings.poll_timeout_seconds):
            log.info(
                "stale poll request skipped; the scheduler has issued a newer one",
                connection_id=str(due.connection_id),
            )
            return None
        config = self._repository.connection(due.connection_id)
        if config is None or not config.view.enabled:
            return self._answer_without_polling(due, sink, PollOutcome.SKIPPED)
        kind = _POLLS[config.view.transport]
        token = self._repository.acquire_lease(
            due.connection_id, self._holder, self._settings.poll_lease_seconds
        )
        if token is None:
            log.info("poll skipped: another fetcher polls it", connection_id=str(due.connection_id))
            return self._answer_without_polling(due, sink, PollOutcome.SKIPPED)
        view = config.view
        host = view.host or urlsplit(self._settings.graph_endpoint).hostname or "graph"
        lease_s = self._settings.poll_lease_seconds
        try:
            with (
                LeaseKeeper(self._repository, due.connection_id, token, lease_s) as keeper,
                self._slots.hold(host, view.username) as slot,
            ):
                if not slot:
                    log.info(
                        "poll skipped: the server's session budget is in use",
                        connection_id=str(due.connection_id),
                        host=host,
                    )
                    return self._answer_without_polling(due, sink, PollOutcome.SKIPPED)
                return self._run(kind, config, due, sink, token, keeper)
        finally:
            self._repository.release_lease(due.connection_id, token)

    def _run(
        self,
        kind: type[Poll],
        config: MailboxConfig,
        due: PollDue,
        sink: Sink,
        token: int,
        keeper: LeaseKeeper,
    ) -> PollResult:
        log.info("poll started", connection_id=str(due.connection_id), reason=due.reason.value)
        poll = kind(
            config,
            due,
            self._repository,
            sink,
            self._budget,
            lease_token=token,
            fence=lambda: self._repository.lease_held(due.connection_id, token),
            stopping=lambda: self._stop.is_set() or keeper.lost,
        )
        result = poll.run()
        if poll.resume is not None and not self._stop.is_set():
            self._continue(due, poll.resume)
        log.info(
            "poll finished",
            connection_id=str(due.connection_id),
            outcome=result.outcome.value,
            messages=result.messages,
            bytes=result.bytes,
            more_pending=result.more_pending,
            actions_applied=result.actions_applied,
        )
        return result

    def _continue(self, due: PollDue, resume: Resume) -> None:
        """Ask for the next slice at once, from where this one left off: the fetchers download
        it while the store commits this one (the store moves the cursor slice by slice, each
        only from where the last one ended)."""
        request = PollRequested(
            connection_id=due.connection_id,
            requested_at=utcnow(),
            after_poll_id=due.poll_id,
            resume=resume,
        )
        topic = topic_name(self._settings.topic_prefix, Topic.POLL_REQUESTED)
        try:
            future = self._producer.send(
                topic,
                record_key(due.connection_id),
                request.to_bytes(),
                headers(request, self._settings.topic_prefix),
            )
            self._producer.settle([future])
        except Exception as exc:  # the store's poll.completed asks for it instead
            log.warning("could not ask for the next slice", error=str(exc))

    @staticmethod
    def _answer_without_polling(due: PollDue, sink: Sink, outcome: PollOutcome) -> PollResult:
        """A result for a poll that did not run, so the scheduler's in-flight state ends."""
        now = utcnow()
        result = PollResult(
            connection_id=due.connection_id,
            poll_id=due.poll_id,
            reason=due.reason,
            outcome=outcome,
            started_at=now,
            finished_at=now,
        )
        sink.result(result)
        sink.flush()
        return result

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()
        self._engine.dispose()


def build(settings: Settings) -> FetcherWorker:
    return FetcherWorker(settings)
