"""The store's worker: connects to the database and the broker, and answers readiness."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from kafka import KafkaConsumer

from mailintake_shared.checks import broker_ok, database_ok
from mailintake_shared.db.engine import make_engine
from mailintake_shared.kafka import ensure_topics, make_consumer
from mailintake_shared.settings import Settings


class Worker:
    def __init__(self, settings: Settings) -> None:
        self._engine = make_engine(settings)
        if settings.create_topics:
            ensure_topics(settings)
        self._consumer: KafkaConsumer = make_consumer(settings, "store", [])

    def readiness(self) -> Mapping[str, bool]:
        return {"database": database_ok(self._engine), "broker": broker_ok(self._consumer)}

    def run(self, stop: threading.Event) -> None:
        stop.wait()

    def close(self) -> None:
        self._consumer.close()
        self._engine.dispose()


def build(settings: Settings) -> Worker:
    return Worker(settings)
