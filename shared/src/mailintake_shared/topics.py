"""Every topic mailintake uses: logical name, physical name, key, configs.

The connection id is the key of every record, so that all records of one connection stay
in order on one partition. docs/topics.md documents each topic for downstream developers.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    """Logical topic names; the physical name is ``settings.topic_prefix + value``."""

    CONNECTIONS = "connections"
    POLL_DUE = "poll.due"
    POLL_REQUESTED = "poll.requested"
    MAIL_FETCHED = "mail.fetched"
    MAIL_STORED = "mail.stored"
    POLL_COMPLETED = "poll.completed"
    CONNECTION_HEALTH = "connection.health"
    STORE_WAITING = "store.waiting"
    DEAD_LETTER = "deadletter"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic
    compacted: bool
    retention_ms: int | None
    description: str

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


_DAY_MS = 24 * 3600 * 1000

TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.CONNECTIONS, True, None, "current state of each connection, no secrets"),
    TopicSpec(Topic.POLL_DUE, False, 1 * _DAY_MS, "a connection's poll is due now"),
    TopicSpec(Topic.POLL_REQUESTED, False, 1 * _DAY_MS, "a poll asked for now: operator or push"),
    TopicSpec(Topic.MAIL_FETCHED, False, 7 * _DAY_MS, "raw downloaded mail and poll results"),
    TopicSpec(Topic.MAIL_STORED, False, 7 * _DAY_MS, "a message was committed to the database"),
    TopicSpec(Topic.POLL_COMPLETED, False, 1 * _DAY_MS, "a poll's outcome, after the store"),
    TopicSpec(Topic.CONNECTION_HEALTH, True, None, "a connection stalled, or recovered"),
    TopicSpec(Topic.STORE_WAITING, True, None, "downloaded mail the store cannot write, and why"),
    TopicSpec(Topic.DEAD_LETTER, False, 30 * _DAY_MS, "records that could not be processed"),
)


@functools.lru_cache(maxsize=1 << 15)
def record_key(connection_id: uuid.UUID) -> bytes:
    """The key of a connection's records: its id as text (``8-4-4-4-12`` hex), UTF-8.
    Remembered: the same connections are keyed again on every poll."""
    return str(connection_id).encode()


def topic_name(prefix: str, topic: Topic) -> str:
    return f"{prefix}{topic.value}"
