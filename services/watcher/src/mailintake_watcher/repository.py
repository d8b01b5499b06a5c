"""The watcher's reads and writes in the database: a connection's settings and cursor, its
watch state for the API (``connection_watches``), its Graph subscription."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_shared.db.dialect import insert_for
from mailintake_shared.db.models import Connection, ConnectionWatch, GraphSubscription
from mailintake_shared.db.queries import cursor_of, mailbox_config
from mailintake_shared.db.types import utcnow
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.selection import Cursor
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.watch import WatchMethod, WatchState


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    expires_at: datetime
    needs: str | None  # "reauthorize" or "recreate" (a lifecycle notification asked)


class WatchRepository:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        secrets: SecretBox,
        tokens: TokenStore,
        network: NetworkPolicy,
        holder: str,
        stale_after_s: float,
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._tokens = tokens
        self._network = network
        self.holder = holder
        self._stale_after = timedelta(seconds=stale_after_s)

    def config(self, connection_id: uuid.UUID) -> MailboxConfig | None:
        with self._sessions() as session:
            row = session.get(Connection, connection_id)
            if row is None:
                return None
            return mailbox_config(row, self._secrets, self._tokens, self._network)

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None:
        with self._sessions() as session:
            return cursor_of(session, connection_id, folder)

    # --- watch states (connection_watches) ------------------------------------------------------
    def report(
        self,
        connection_id: uuid.UUID,
        state: WatchState,
        method: WatchMethod,
        reason: str | None,
        since: datetime,
        *,
        yield_to_holder: bool = False,
    ) -> None:
        """This watcher's word on the connection. ``yield_to_holder``: it does not hold the
        connection (another watcher does), so a fresh report of another watcher stands."""
        now = utcnow()
        values = {
            "state": state.value,
            "method": method.value,
            "since": since,
            "reason": reason[:2000] if reason else None,
            "holder": self.holder,
            "confirmed_at": now,
        }
        mine_or_stale = None
        if yield_to_holder:
            mine_or_stale = or_(
                ConnectionWatch.holder == self.holder,
                ConnectionWatch.confirmed_at < now - self._stale_after,
            )
        with self._sessions() as session, session.begin():
            insert = insert_for(session)
            session.execute(
                insert(ConnectionWatch)
                .values(connection_id=connection_id, **values)
                .on_conflict_do_update(
                    index_elements=["connection_id"], set_=values, where=mine_or_stale
                )
            )

    def confirm(self, connection_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """This watcher still stands by what it reported for these connections; the ones
        whose report is not (or no longer) its own."""
        ids = list(connection_ids)
        confirmed: set[uuid.UUID] = set()
        with self._sessions() as session, session.begin():
            for start in range(0, len(ids), 1000):
                confirmed.update(
                    session.scalars(
                        update(ConnectionWatch)
                        .where(
                            ConnectionWatch.holder == self.holder,
                            ConnectionWatch.connection_id.in_(ids[start : start + 1000]),
                        )
                        .values(confirmed_at=utcnow())
                        .returning(ConnectionWatch.connection_id)
                    )
                )
        return set(ids) - confirmed

    def forget(self, connection_ids: Collection[uuid.UUID] | None = None) -> None:
        """Withdraw this watcher's reports (of these connections; of all when None). Another
        watcher's report of the same connection stays."""
        query = delete(ConnectionWatch).where(ConnectionWatch.holder == self.holder)
        if connection_ids is not None:
            query = query.where(ConnectionWatch.connection_id.in_(list(connection_ids)))
        with self._sessions() as session, session.begin():
            session.execute(query)

    # --- Graph subscriptions --------------------------------------------------------------------
    def subscription(self, connection_id: uuid.UUID) -> Subscription | None:
        with self._sessions() as session:
            row = session.scalar(
                select(GraphSubscription).where(GraphSubscription.connection_id == connection_id)
            )
            if row is None:
                return None
            return Subscription(row.subscription_id, row.expires_at, row.needs)

    def save_subscription(
        self,
        connection_id: uuid.UUID,
        subscription_id: str,
        client_state_sha256: str,
        expires_at: datetime,
    ) -> None:
        """The connection's subscription from now on (any earlier one is forgotten)."""
        with self._sessions() as session, session.begin():
            session.execute(
                delete(GraphSubscription).where(GraphSubscription.connection_id == connection_id)
            )
            session.add(
                GraphSubscription(
                    subscription_id=subscription_id,
                    connection_id=connection_id,
                    client_state_sha256=client_state_sha256,
                    expires_at=expires_at,
                    created_at=utcnow(),
                )
            )

    def renewed(self, subscription_id: str, expires_at: datetime, needs_before: str | None) -> None:
        """A renewal took effect; what a lifecycle notification asked for is done, unless
        another one asked again meanwhile."""
        with self._sessions() as session, session.begin():
            session.execute(
                update(GraphSubscription)
                .where(GraphSubscription.subscription_id == subscription_id)
                .values(expires_at=expires_at)
            )
            session.execute(
                update(GraphSubscription)
                .where(
                    GraphSubscription.subscription_id == subscription_id,
                    GraphSubscription.needs == needs_before,
                )
                .values(needs=None)
            )

    def drop_subscription(self, connection_id: uuid.UUID) -> None:
        with self._sessions() as session, session.begin():
            session.execute(
                delete(GraphSubscription).where(GraphSubscription.connection_id == connection_id)
            )
