"""The fetcher's reads and writes in the database: connection, cursor, known messages,
server actions."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_fetcher.poll import PendingAction
from mailintake_shared.db import leases
from mailintake_shared.db.models import Connection, Message, PendingDownload
from mailintake_shared.db.queries import cursor_of, known_server_ids, mailbox_config
from mailintake_shared.db.types import utcnow
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.selection import Cursor
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox


class FetcherRepository:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        secrets: SecretBox,
        tokens: TokenStore | None = None,
        network: NetworkPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._tokens = tokens
        self._network = network

    def connection(self, connection_id: uuid.UUID) -> MailboxConfig | None:
        with self._sessions() as session:
            row = session.get(Connection, connection_id)
            if row is None:
                return None
            return mailbox_config(row, self._secrets, self._tokens, self._network)

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None:
        with self._sessions() as session:
            return cursor_of(session, connection_id, folder)

    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int | None
    ) -> list[PendingAction]:
        """Committed messages whose server action is still to apply: of this folder epoch
        (IMAP), or of the mailbox (POP3, ``uidvalidity`` None)."""
        query = select(
            Message.id, Message.server_id, Message.uid, Message.sha256, Message.size
        ).where(
            Message.connection_id == connection_id,
            Message.folder == folder,
            Message.action_state == "pending",
        )
        if uidvalidity is not None:
            query = query.where(Message.uidvalidity == uidvalidity)
        with self._sessions() as session:
            rows = session.execute(query.order_by(Message.uid, Message.id)).all()
        return [PendingAction(r.id, r.server_id, r.uid, r.sha256, r.size) for r in rows]

    def known_server_ids(
        self, connection_id: uuid.UUID, folder: str, among: Collection[str] | None = None
    ) -> set[str]:
        with self._sessions() as session:
            return known_server_ids(session, connection_id, folder, among)

    def pending_downloads(self, connection_id: uuid.UUID, folder: str) -> dict[str, int | None]:
        query = select(PendingDownload.server_id, PendingDownload.uid).where(
            PendingDownload.connection_id == connection_id, PendingDownload.folder == folder
        )
        with self._sessions() as session:
            return {row.server_id: row.uid for row in session.execute(query)}

    def stored_digests(self, connection_id: uuid.UUID, folder: str, uidl: str) -> dict[str, str]:
        query = select(Message.server_id, Message.sha256).where(
            Message.connection_id == connection_id,
            Message.folder == folder,
            or_(Message.server_id == uidl, Message.server_id.startswith(uidl + " ")),
        )
        with self._sessions() as session:
            return {row.server_id: row.sha256 for row in session.execute(query)}

    def actions_applied(self, message_ids: Sequence[int]) -> None:
        with self._sessions() as session, session.begin():
            for start in range(0, len(message_ids), 1000):
                session.execute(
                    update(Message)
                    .where(Message.id.in_(message_ids[start : start + 1000]))
                    .values(action_state="applied", action_applied_at=utcnow())
                )

    def acquire_lease(self, connection_id: uuid.UUID, holder: str, seconds: float) -> int | None:
        with self._sessions() as session, session.begin():
            return leases.acquire(session, connection_id, holder, seconds)

    def lease_held(self, connection_id: uuid.UUID, token: int) -> bool:
        with self._sessions() as session:
            return leases.held(session, connection_id, token)

    def renew_lease(self, connection_id: uuid.UUID, token: int, seconds: float) -> bool:
        with self._sessions() as session, session.begin():
            return leases.renew(session, connection_id, token, seconds)

    def release_lease(self, connection_id: uuid.UUID, token: int) -> None:
        with self._sessions() as session, session.begin():
            leases.release(session, connection_id, token)
