"""What the API holds for its lifetime: database, secret box, outbox relay, token table."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kafka import KafkaProducer
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from mailintake_config_api.auth import TokenTable
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.kafka import ensure_topics, make_producer
from mailintake_shared.outbox import OutboxRelay
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secrets: SecretBox
    tokens: TokenTable
    relay: OutboxRelay
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings) -> Resources:
        engine = make_engine(settings)
        sessions = make_session_factory(engine)

        def producer() -> KafkaProducer:
            if settings.create_topics:
                ensure_topics(settings)
            return make_producer(settings, "config-api")

        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            secrets=SecretBox(settings.encryption_keys),
            tokens=TokenTable(settings.api_tokens),
            relay=OutboxRelay(sessions, producer),
        )

    def start(self) -> None:
        thread = threading.Thread(
            target=self.relay.run, args=(self.stop,), name="outbox-relay", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        self.relay.wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.relay.close()
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
