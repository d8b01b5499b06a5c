"""The fetcher's reads and writes in the database: connection, cursor, known messages,
server actions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, union, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_fetcher.poll import PendingAction
from mailintake_shared.db.models import Connection, FailedMessage, MailboxState, Message
from mailintake_shared.db.types import utcnow
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.selection import Cursor
from mailintake_shared.secretbox import SecretBox


class FetcherRepository:
    def __init__(self, sessions: sessionmaker[Session], secrets: SecretBox) -> None:
        self._sessions = sessions
        self._secrets = secrets

    def connection(self, connection_id: uuid.UUID) -> MailboxConfig | None:
        with self._sessions() as session:
            row = session.get(Connection, connection_id)
            if row is None:
                return None
            password = self._secrets.decrypt(row.password_enc) if row.password_enc else None
            return MailboxConfig(view=row.view(), password=password)

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None:
        with self._sessions() as session:
            state = session.get(MailboxState, (connection_id, folder))
            if state is None:
                return None
            return Cursor(state.uidvalidity, state.last_uid, state.baseline_uid)

    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int | None
    ) -> list[PendingAction]:
        """Committed messages whose server action is still to apply: of this folder epoch
        (IMAP), or of the mailbox (POP3, ``uidvalidity`` None)."""
        query = select(Message.id, Message.server_id, Message.uid).where(
            Message.connection_id == connection_id,
            Message.folder == folder,
            Message.action_state == "pending",
        )
        if uidvalidity is not None:
            query = query.where(Message.uidvalidity == uidvalidity)
        with self._sessions() as session:
            rows = session.execute(query.order_by(Message.uid, Message.id)).all()
        return [PendingAction(r.id, r.server_id, r.uid) for r in rows]

    def known_server_ids(self, connection_id: uuid.UUID, folder: str) -> set[str]:
        """Server ids already stored, or waiting in the Incoming Mail Queue as failed."""
        stored = select(Message.server_id).where(
            Message.connection_id == connection_id, Message.folder == folder
        )
        failed = select(FailedMessage.server_id).where(
            FailedMessage.connection_id == connection_id, FailedMessage.folder == folder
        )
        with self._sessions() as session:
            return set(session.scalars(union(stored, failed)))

    def actions_applied(self, message_ids: Sequence[int]) -> None:
        with self._sessions() as session, session.begin():
            for start in range(0, len(message_ids), 1000):
                session.execute(
                    update(Message)
                    .where(Message.id.in_(message_ids[start : start + 1000]))
                    .values(action_state="applied", action_applied_at=utcnow())
                )
