"""Reads of a mailbox's state that the fetcher (polls) and the config API (the estimate
before enabling) share."""

from __future__ import annotations

import uuid

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Connection, FailedMessage, MailboxState, Message
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.selection import Cursor
from mailintake_shared.secretbox import SecretBox


def mailbox_config(row: Connection, secrets: SecretBox) -> MailboxConfig:
    """The connection's view and its decrypted password."""
    password = secrets.decrypt(row.password_enc) if row.password_enc else None
    return MailboxConfig(view=row.view(), password=password)


def cursor_of(session: Session, connection_id: uuid.UUID, folder: str) -> Cursor | None:
    state = session.get(MailboxState, (connection_id, folder))
    if state is None:
        return None
    return Cursor(state.uidvalidity, state.last_uid, state.baseline_uid)


def known_server_ids(session: Session, connection_id: uuid.UUID, folder: str) -> set[str]:
    """Server ids already stored, or waiting in the Incoming Mail Queue as failed."""
    stored = select(Message.server_id).where(
        Message.connection_id == connection_id, Message.folder == folder
    )
    failed = select(FailedMessage.server_id).where(
        FailedMessage.connection_id == connection_id, FailedMessage.folder == folder
    )
    return set(session.scalars(union(stored, failed)))
