"""Announce stored messages again on ``mail.stored``: for a downstream handler that lost its
state, or one added later that needs the past. The events are those of the first time (the
same ``message_id``, so handlers that keep the ids they handled skip what they have), queued
in the outbox in the order the messages were stored."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Message
from mailintake_shared.events import HeaderSummary, MailStored, SmimeInfo, b64
from mailintake_shared.outbox import OutboxEntry, add_many_to_outbox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic

MAX_MESSAGES = 100_000  # per request: a larger range is replayed in several
_BATCH = 500


class TooManyError(ValueError):
    """The range holds more than ``MAX_MESSAGES`` messages."""


def mail_stored_event(row: Message, inline_max: int) -> MailStored:
    """The event the store published for this message (again, or now decrypted)."""
    body = row.unwrapped if row.unwrapped is not None else row.raw
    return MailStored(
        message_id=row.id,
        connection_id=row.connection_id,
        folder=row.folder,
        server_id=row.server_id,
        size=row.size,
        sha256=row.sha256,
        internal_date=row.internal_date,
        stored_at=row.stored_at,
        headers=HeaderSummary(
            from_=row.header_from,
            to=row.header_to,
            cc=row.header_cc,
            subject=row.subject,
            date=row.header_date,
            message_id=row.message_id_header,
            in_reply_to=row.in_reply_to,
            references=row.references,
        ),
        problems=json.loads(row.problems) if row.problems else [],
        raw_b64=b64(bytes(body)) if body is not None and len(body) <= inline_max else None,
        raw_path=f"/messages/{row.id}/raw",
        smime=SmimeInfo.model_validate_json(row.smime) if row.smime else None,
    )


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
        # Large bodies are not loaded: their events carry the reference only.
        query = (
            select(Message).where(*where, Message.id > last_id).order_by(Message.id).limit(_BATCH)
        )
        rows = list(session.scalars(query))
        if not rows:
            return count
        entries = [
            OutboxEntry(
                Topic.MAIL_STORED,
                str(row.connection_id),
                mail_stored_event(row, settings.inline_max_bytes).to_bytes(),
                row.id,
            )
            for row in rows
        ]
        add_many_to_outbox(session, settings.topic_prefix, entries)
        session.flush()
        session.expunge_all()
        last_id = rows[-1].id
