"""What the API holds for its lifetime: database, secret box, outbox relay, token table."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from mailintake_config_api import incoming
from mailintake_config_api.auth import TokenTable
from mailintake_config_api.republish import keep_topic_whole
from mailintake_config_api.store_waiting import StoreWaitingView
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.kafka import ReliableProducer
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.outbox import OutboxRelay
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings

log = get_logger(__name__)


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secrets: SecretBox
    api_tokens: TokenTable
    relay: OutboxRelay
    producer: ReliableProducer
    tokens: TokenStore
    network: NetworkPolicy  # which addresses a tested or estimated connection may reach
    store_waiting: StoreWaitingView  # what the store says it cannot write
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings) -> Resources:
        engine = make_engine(settings)
        sessions = make_session_factory(engine)

        producer = ReliableProducer(settings, "config-api")
        secrets = SecretBox(settings.encryption_keys)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            secrets=secrets,
            api_tokens=TokenTable(settings.api_tokens),
            relay=OutboxRelay(sessions, producer, inline_max_bytes=settings.inline_max_bytes),
            producer=producer,
            tokens=TokenStore(sessions, secrets, settings),
            network=NetworkPolicy.of(settings.outbound_allow_cidrs, settings.outbound_deny_cidrs),
            store_waiting=StoreWaitingView(settings),
        )

    def start(self) -> None:
        for name, target in (
            ("outbox-relay", self._relay),
            ("resync", self._resync),
            ("purge", self._purge),
            ("store-waiting", self._store_waiting),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self) -> None:
        self.relay.run(self.stop)

    def _store_waiting(self) -> None:
        self.store_waiting.run(self.stop)

    def _resync(self) -> None:
        keep_topic_whole(self.settings, self.sessions, self.relay.wake, self.stop)

    def _purge(self) -> None:
        """Purge the Incoming Mail Log and Queue by their retention, now and then."""
        while not self.stop.is_set():
            try:
                with self.sessions() as session, session.begin():
                    purged = incoming.purge(session, self.settings)
                if any(dataclasses.astuple(purged)):
                    log.info("retention purge", **dataclasses.asdict(purged))
            except Exception as exc:
                log.warning("retention purge failed; will retry", error=str(exc))
            self.stop.wait(self.settings.purge_interval_seconds)

    def close(self) -> None:
        self.stop.set()
        self.relay.wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.producer.close()
        self.engine.dispose()

    def readiness(self) -> dict[str, bool]:
        """Ready when the database answers. A broker outage does not make the API unready:
        writes queue in the outbox and are published when the broker is back."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        return {"database": database}
