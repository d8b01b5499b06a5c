"""How many stored messages never got their ``mail.stored`` event, and how many got it more
than once: counted from the records on the topic (end offsets are not trusted: some brokers
answer them wrongly) against the message rows."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from mailintake_shared.db.engine import make_engine
from mailintake_shared.db.migrate import upgrade
from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.harness.pipeline import Database, wait_until


@dataclass(frozen=True)
class Announced:
    stored: int  # message rows
    records: int  # mail.stored records on the topic
    lost: int  # stored messages without a record
    duplicates: int  # records beyond the first of a message


def announced(settings: Settings, db: Database) -> Announced:
    records = read_topic_to_end(settings, Topic.MAIL_STORED, timeout_s=120)
    per_message = Counter(json.loads(r.value)["message_id"] for r in records)
    stored = {int(row.id) for row in db.rows("SELECT id FROM messages")}
    return Announced(
        stored=len(stored),
        records=len(records),
        lost=len(stored - set(per_message)),
        duplicates=sum(count - 1 for count in per_message.values()),
    )


def outbox_empty(db: Database) -> bool:
    return int(db.scalar("SELECT count(*) FROM outbox")) == 0


def read_while_stored(api: TestClient, connection_id: str, db: Database, count: int) -> None:
    """Read the connection through the API every 0.25 s (as an operator's status check would)
    until ``count`` messages are stored, then until every event has left the outbox."""
    deadline = time.monotonic() + 1800
    while db.message_count() < count and time.monotonic() < deadline:
        assert api.get(f"/connections/{connection_id}").status_code == 200
        time.sleep(0.25)
    assert db.message_count() == count
    wait_until(lambda: outbox_empty(db), timeout_s=600, message="every event relayed")


def on_sqlite(settings: Settings, path: Path) -> Settings:
    """``settings`` on a fresh SQLite database at ``path``, migrated (the embedded default)."""
    sqlite = settings.model_copy(update={"database_url": f"sqlite:///{path}"})
    engine = make_engine(sqlite)
    upgrade(engine)
    engine.dispose()
    return sqlite
