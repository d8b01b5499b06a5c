"""The Incoming Mail Queue and Log: queries, the administrator's actions, and the purge.

Queue: what is not all the way through. A stored message whose ``mail.stored`` event is not
published yet (``awaiting_publish``), that is encrypted and was not decrypted
(``smime_unopened``: no certificate of its connection opened it) or whose server action is
not applied yet (``action_pending``), and a downloaded message the store could not take
(``failed``).

Log: one row per poll (``poll_log``) and one per message record the store received
(``message_log``: stored, duplicate, rejected), with publishing and the server action read
from the message row.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Delete, Select, case, delete, func, literal, select, union_all
from sqlalchemy.orm import Session

from mailintake_shared import smime
from mailintake_shared.db.dialect import insert_for
from mailintake_shared.db.models import (
    FailedMessage,
    Message,
    MessageLog,
    OutboxRecord,
    PendingDownload,
    PollLog,
)
from mailintake_shared.db.types import utcnow
from mailintake_shared.outbox import add_many_to_outbox, announce_stored
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings


class QueueState(StrEnum):
    AWAITING_PUBLISH = "awaiting_publish"
    SMIME_UNOPENED = "smime_unopened"
    ACTION_PENDING = "action_pending"
    FAILED = "failed"


class EntryKind(StrEnum):
    MESSAGE = "message"  # a stored message (id of the messages table)
    FAILED = "failed"  # a message the store could not take (id of failed_messages)


@dataclass(frozen=True)
class Window:
    """Filters shared by every list: connection, time range, page."""

    connection_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0


class EntryNotFoundError(LookupError):
    pass


# --- the queue -----------------------------------------------------------------------------
def _queue_query() -> Any:
    unpublished = Message.published_at.is_(None)
    stored = select(
        literal(EntryKind.MESSAGE.value).label("kind"),
        Message.id.label("id"),
        Message.connection_id.label("connection_id"),
        Message.folder.label("folder"),
        Message.server_id.label("server_id"),
        case(
            (unpublished, literal(QueueState.AWAITING_PUBLISH.value)),
            (Message.smime_unopened, literal(QueueState.SMIME_UNOPENED.value)),
            else_=literal(QueueState.ACTION_PENDING.value),
        ).label("state"),
        Message.size.label("size"),
        Message.subject.label("subject"),
        Message.header_from.label("header_from"),
        Message.problems.label("reason"),
        Message.stored_at.label("at"),
    ).where(unpublished | (Message.action_state == "pending") | Message.smime_unopened)
    failed = select(
        literal(EntryKind.FAILED.value),
        FailedMessage.id,
        FailedMessage.connection_id,
        FailedMessage.folder,
        FailedMessage.server_id,
        literal(QueueState.FAILED.value),
        func.coalesce(func.length(FailedMessage.raw), 0),
        literal(None),
        literal(None),
        FailedMessage.reason,
        FailedMessage.failed_at,
    ).where(FailedMessage.dismissed_at.is_(None))
    return union_all(stored, failed).subquery("queue")


def _page(
    session: Session,
    query: Select[*tuple[Any, ...]],
    window: Window,
    connection: Any,
    time: Any,
    *order: Any,
    **equal: tuple[Any, object | None],
) -> tuple[list[Any], int]:
    """Rows of ``query`` in the window (connection, time range, page), newest first, with
    ``equal`` filters (name → (column, value or None)), and how many there are in all."""
    filters = [(connection, window.connection_id), *equal.values()]
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    if window.since is not None:
        query = query.where(time >= window.since)
    if window.until is not None:
        query = query.where(time < window.until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(*order).limit(window.limit).offset(window.offset))
    return list(rows.all()), total


def queue_page(session: Session, window: Window, state: QueueState | None) -> tuple[list[Any], int]:
    queue = _queue_query()
    return _page(
        session,
        select(queue),
        window,
        queue.c.connection_id,
        queue.c.at,
        queue.c.at.desc(),
        queue.c.id.desc(),
        state=(queue.c.state, state.value if state else None),
    )


def queue_counts(session: Session) -> dict[QueueState, int]:
    """How many entries the queue holds in each state."""
    queue = _queue_query()
    rows = session.execute(select(queue.c.state, func.count()).group_by(queue.c.state)).all()
    counted = {QueueState(state): int(count) for state, count in rows}
    return {state: counted.get(state, 0) for state in QueueState}


def raw_of(session: Session, kind: EntryKind, entry_id: int) -> bytes | None:
    if kind is EntryKind.MESSAGE:
        message = session.get(Message, entry_id)
        if message is None:
            raise EntryNotFoundError()
        return bytes(message.raw)
    failed = _failed(session, entry_id)
    return bytes(failed.raw) if failed.raw is not None else None


def _failed(session: Session, entry_id: int) -> FailedMessage:
    failed = session.get(FailedMessage, entry_id)
    if failed is None or failed.dismissed_at is not None:
        raise EntryNotFoundError()
    return failed


def retry(
    session: Session, settings: Settings, secrets: SecretBox, kind: EntryKind, entry_id: int
) -> tuple[uuid.UUID, str, bool]:
    """Redo the step that is stuck; return the connection, what was done, and whether a poll
    of the connection finishes it.

    - awaiting publish: the event is in the outbox; the caller wakes the relay;
    - S/MIME unopened: decrypted again with the connection's certificates of now (add the
      right one first); when it opens, ``mail.stored`` is published again, decrypted;
    - action pending: the next poll applies it; the caller asks for one;
    - failed: the message becomes a pending download again, which the next poll tries first
      (by UID, UIDL or Graph id), with the attempts allowed counted anew.
    """
    if kind is EntryKind.MESSAGE:
        message = session.get(Message, entry_id)
        if message is None:
            raise EntryNotFoundError()
        if message.published_at is None:
            return message.connection_id, "the event is queued; publishing now", False
        if message.smime_unopened:
            return message.connection_id, _open_again(session, settings, secrets, message), False
        return message.connection_id, "a poll applies the server action", True
    failed = _failed(session, entry_id)
    session.execute(
        insert_for(session)(PendingDownload)
        .values(
            connection_id=failed.connection_id,
            folder=failed.folder,
            server_id=failed.server_id,
            uidvalidity=failed.uidvalidity,
            uid=failed.uid,
            attempts=0,
            reason="asked for again from the Incoming Mail Queue",
            first_failed_at=utcnow(),
            last_failed_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    connection_id = failed.connection_id
    session.delete(failed)
    return connection_id, "downloaded again by the next poll", True


def _open_again(session: Session, settings: Settings, secrets: SecretBox, message: Message) -> str:
    keys = smime.load_keys(session, secrets, message.connection_id)
    result = smime.unwrap_with(bytes(message.raw), keys, utcnow())
    problems = [p for p in json.loads(message.problems or "[]") if not p.startswith("S/MIME: ")]
    if result.info.problem is not None:
        problems.append(f"S/MIME: {result.info.problem}")
    message.problems = json.dumps(problems) if problems else None
    message.smime = result.info.model_dump_json()
    message.unwrapped = result.mime
    message.smime_unopened = result.info.unopened
    if result.info.unopened:
        return f"still not decrypted: {result.info.problem}"
    message.published_at = None  # a new announcement (its own ce_id), not a replay
    entry = announce_stored(message.id, message.connection_id)
    add_many_to_outbox(session, settings.topic_prefix, [entry])
    return "decrypted; mail.stored is published again with the decrypted message"


def remove(session: Session, kind: EntryKind, entry_id: int) -> None:
    """A stored message is deleted with its unpublished event; a failed one is dismissed
    (kept, hidden, so that POP3 does not download it again, until the purge)."""
    if kind is EntryKind.MESSAGE:
        message = session.get(Message, entry_id)
        if message is None:
            raise EntryNotFoundError()
        session.execute(delete(OutboxRecord).where(OutboxRecord.message_id == message.id))
        session.delete(message)
        return
    _failed(session, entry_id).dismissed_at = utcnow()


# --- the log -------------------------------------------------------------------------------
def poll_page(session: Session, window: Window, outcome: str | None) -> tuple[list[Any], int]:
    rows, total = _page(
        session,
        select(PollLog),
        window,
        PollLog.connection_id,
        PollLog.started_at,
        PollLog.id.desc(),
        outcome=(PollLog.outcome, outcome),
    )
    return [row[0] for row in rows], total


def message_log_page(
    session: Session,
    window: Window,
    outcome: str | None,
    poll_id: uuid.UUID | None,
    message_id: int | None,
) -> tuple[list[Any], int]:
    query = select(
        MessageLog,
        Message.published_at,
        Message.action_state,
        Message.action_applied_at,
    ).outerjoin(Message, Message.id == MessageLog.message_id)
    return _page(
        session,
        query,
        window,
        MessageLog.connection_id,
        MessageLog.logged_at,
        MessageLog.id.desc(),
        outcome=(MessageLog.outcome, outcome),
        poll_id=(MessageLog.poll_id, poll_id),
        message_id=(MessageLog.message_id, message_id),
    )


# --- retention -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Purged:
    polls: int
    messages_logged: int
    failed: int


def purge(session: Session, settings: Settings) -> Purged:
    now = utcnow()
    polls = logged = failed = 0
    if settings.log_retention_days:
        cutoff = now - timedelta(days=settings.log_retention_days)
        polls = _delete(session, delete(PollLog).where(PollLog.started_at < cutoff))
        logged = _delete(session, delete(MessageLog).where(MessageLog.logged_at < cutoff))
    if settings.queue_retention_days:
        cutoff = now - timedelta(days=settings.queue_retention_days)
        failed = _delete(session, delete(FailedMessage).where(FailedMessage.failed_at < cutoff))
    return Purged(polls, logged, failed)


def _delete(session: Session, statement: Delete) -> int:
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)
