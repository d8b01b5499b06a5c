"""The fetcher's reads and writes in the database: connection, cursor, server actions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_fetcher.config import MailboxConfig
from mailintake_shared.db.models import Connection, MailboxState, Message
from mailintake_shared.db.types import utcnow
from mailintake_shared.secretbox import SecretBox


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int | None
    last_uid: int


@dataclass(frozen=True)
class PendingAction:
    message_id: int
    uid: int


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
            return None if state is None else Cursor(state.uidvalidity, state.last_uid)

    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int
    ) -> list[PendingAction]:
        """Committed messages of this folder epoch whose server action is still to apply."""
        with self._sessions() as session:
            rows = session.execute(
                select(Message.id, Message.uid)
                .where(
                    Message.connection_id == connection_id,
                    Message.folder == folder,
                    Message.action_state == "pending",
                    Message.uidvalidity == uidvalidity,
                )
                .order_by(Message.uid)
            ).all()
        return [PendingAction(r.id, r.uid) for r in rows if r.uid is not None]

    def actions_applied(self, message_ids: Sequence[int]) -> None:
        with self._sessions() as session, session.begin():
            for start in range(0, len(message_ids), 1000):
                session.execute(
                    update(Message)
                    .where(Message.id.in_(message_ids[start : start + 1000]))
                    .values(action_state="applied", action_applied_at=utcnow())
                )
