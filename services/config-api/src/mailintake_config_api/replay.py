"""Announce stored messages again on ``mail.stored``: for a downstream handler that lost its
state, or one added later that needs the past. The events are those of the first time (the
same ``message_id``, so handlers that keep the ids they handled skip what they have), queued
in the outbox in the order the messages were stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Message
from mailintake_shared.outbox import add_many_to_outbox, announce_stored
from mailintake_shared.settings import Settings

MAX_MESSAGES = 100_000  # per request: a larger range is replayed in several
_BATCH = 500


class TooManyError(ValueError):
    """The range holds more than ``MAX_MESSAGES`` messages."""


def replay(
    session: Session, settings: Settings, connection_id: uuid.UUID, since: datetime, until: datetime
) -> int:
    where = (
        Message.connection_id == connection_id,
        Message.stored_at >= since,
        Message.stored_at < until,
    )
    count = session.scalar(select(func.count()).select_from(Message).where(*where)) or 0
    if count > MAX_MESSAGES:
        raise TooManyError(f"{count} messages in the range; at most {MAX_MESSAGES} per replay")
    last_id = 0
    while True:
        # Only the ids are queued: the relay builds each event from its row when publishing.
        query = select(Message.id).where(*where, Message.id > last_id).order_by(Message.id)
        ids = list(session.scalars(query.limit(_BATCH)))
        if not ids:
            return count
        entries = [announce_stored(message_id, connection_id) for message_id in ids]
        add_many_to_outbox(session, settings.topic_prefix, entries)
        last_id = ids[-1]
