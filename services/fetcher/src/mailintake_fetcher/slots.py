"""A budget of concurrent sessions per mail server host and per account, across every
fetcher: mail servers cap connections (Dovecot's ``mail_max_userip_connections``, Gmail's
15 per account), and a fetcher over the cap would fail where waiting a moment succeeds.

Slots are PostgreSQL advisory locks, held on one database connection for the length of a
poll: ``N`` slots per key, a poll takes one of the account's and one of the host's, or none
and the poll is skipped (the scheduler tries again shortly). Locks die with their database
session, so a fetcher that crashes frees its slots. SQLite (one machine, one fetcher): no
budget is needed. Watchers hold slots of the same budgets (``db.session_budget``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from mailintake_shared.db.session_budget import account_budget, host_budget, lock_key


class SessionSlots:
    def __init__(self, engine: Engine, per_host: int, per_account: int) -> None:
        self._engine = engine
        self._per_host = per_host
        self._per_account = per_account

    @contextmanager
    def hold(self, host: str, account: str) -> Iterator[bool]:
        """True while a slot of the account and one of the host are held for this poll."""
        if self._engine.dialect.name != "postgresql":
            yield True
            return
        connection = self._engine.connect()
        try:
            got = self._take(connection, account_budget(host, account), self._per_account)
            got = got and self._take(connection, host_budget(host), self._per_host)
            connection.commit()
            yield got
        finally:
            connection.execute(text("SELECT pg_advisory_unlock_all()"))
            connection.commit()
            connection.close()

    @staticmethod
    def _take(connection: Connection, name: str, slots: int) -> bool:
        key = lock_key(name)
        for slot in range(slots):
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:key, :slot)"), {"key": key, "slot": slot}
            ).scalar()
            if taken:
                return True
        return False
