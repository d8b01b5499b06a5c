"""Keep the ``connections`` topic whole: the scheduler rebuilds its schedule from it.

Every connection's state is published again when the config API starts, whenever the topic is
a new one (Kafka gives every topic an id; a broker that lost its data, or a topic deleted and
made again, has a new id), and every ``connections_resync_seconds`` as a last resort. Without
it a broker that came back empty left the scheduler without connections, and so without
polls, until the next resync.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

from kafka import KafkaAdminClient
from sqlalchemy.orm import Session, sessionmaker

from mailintake_config_api import connections
from mailintake_shared.kafka import ensure_topics
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic, topic_name

log = get_logger(__name__)


class TopicIdentity:
    """The connections topic's id as the broker says it (None: the topic does not exist)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: KafkaAdminClient | None = None

    def current(self) -> uuid.UUID | None:
        name = topic_name(self._settings.topic_prefix, Topic.CONNECTIONS)
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self._settings.bootstrap_servers,
                    client_id=f"{self._settings.kafka_client_id}-config-api-watch",
                )
            (described,) = self._admin.describe_topics([name])
        except Exception:
            self.close()  # a broker that restarted: connect afresh next time
            raise
        if described.get("error_code"):  # UNKNOWN_TOPIC_OR_PARTITION: not there
            return None
        return uuid.UUID(str(described["topic_id"]))

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


def keep_topic_whole(
    settings: Settings,
    sessions: sessionmaker[Session],
    wake_relay: threading.Event,
    stop: threading.Event,
) -> None:
    """Republish on start, on a new topic, and every ``connections_resync_seconds``."""
    identity = TopicIdentity(settings)
    published_to: uuid.UUID | None = None
    last = 0.0
    resync = settings.connections_resync_seconds
    try:
        while True:
            try:
                current = identity.current()
                if current is None and settings.create_topics:
                    ensure_topics(settings)
                    current = identity.current()
                due = bool(resync) and time.monotonic() - last >= resync
                if current is not None and (current != published_to or due):
                    with sessions() as session, session.begin():
                        count = connections.republish_all(session, settings)
                    wake_relay.set()
                    published_to, last = current, time.monotonic()
                    log.info("connection states republished", connections=count)
            except Exception as exc:
                log.warning("could not check the connections topic", error=str(exc))
            if stop.wait(settings.connections_check_seconds):
                return
    finally:
        identity.close()
