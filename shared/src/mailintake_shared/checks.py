"""Readiness checks the services share: the database answers, the broker answers."""

from __future__ import annotations

from kafka import KafkaConsumer
from sqlalchemy import Engine, text

from mailintake_shared.kafka import CommitAfterWorkLoop


def database_ok(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def broker_ok(consumer: KafkaConsumer) -> bool:
    try:
        return bool(consumer.bootstrap_connected()) or bool(consumer.topics())
    except Exception:
        return False


def consumer_readiness(
    engine: Engine, consumer: KafkaConsumer, loop: CommitAfterWorkLoop | None
) -> dict[str, bool]:
    """A consuming service is ready when its database and broker answer and its last batch
    went through."""
    return {
        "database": database_ok(engine),
        "broker": broker_ok(consumer),
        "processing": loop is None or loop.healthy,
    }
