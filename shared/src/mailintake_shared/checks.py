"""Readiness checks the services share: the database answers, the broker answers."""

from __future__ import annotations

from kafka import KafkaConsumer
from sqlalchemy import Engine, text


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
