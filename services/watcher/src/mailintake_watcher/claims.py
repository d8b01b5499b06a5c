"""Who may watch a connection, and with which sessions of its budget: PostgreSQL advisory
locks, all held on one database connection of this process.

A watch claims three locks before it connects: the connection's own (exclusive: two
replicas never watch one connection at once, even in the middle of a rebalance, or when a
paused replica's partitions went to another one while its sessions stayed open), and a slot
of its account's and of its host's session budget, from the upper half only
(``mailintake_shared.db.session_budget``): polls always keep the lower half. A Graph
connection needs only the first (it holds no session). Locks die with the database
session: a watcher that crashes frees them at once. If this process's lock connection is
lost, every claim is lost with it (``alive`` says so) and the watches must stop.

PostgreSQL grants a session a lock it already holds again (advisory locks are re-entrant),
so the locks this process holds are also tracked here: two watches of one process never
share a slot. Not thread-safe: one thread calls it (the watcher's claims executor). SQLite
(one machine, one watcher): every claim is granted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from hashlib import blake2b

from sqlalchemy import Connection, Engine, TextClause, text

from mailintake_shared.db.session_budget import (
    account_budget,
    host_budget,
    lock_key,
    watch_slots,
)

_TRY = text("SELECT pg_try_advisory_lock(:key, :slot)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key, :slot)")
_TRY_OWN = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK_OWN = text("SELECT pg_advisory_unlock(:key)")
# A connection's own claim is a one-key lock on 64 bits of a hash of its id: PostgreSQL keeps
# one-key locks apart from two-key ones (the budgets'), and 32 bits would make two of 10,000
# connections share a claim once in 86 (one of them never watched, "another watcher holds it").
_OWN = -1  # its slot here


@dataclass(frozen=True)
class Refused:
    """A claim not granted, and why (shown as the watch's reason); ``elsewhere``: another
    watcher holds the connection (its report of it stands)."""

    reason: str
    elsewhere: bool = False


class Claims:
    def __init__(self, engine: Engine, per_host: int, per_account: int) -> None:
        self._engine = engine
        self._locking = engine.dialect.name == "postgresql"
        self._per_host = per_host
        self._per_account = per_account
        self._connection: Connection | None = None
        self._held: dict[uuid.UUID, list[tuple[int, int]]] = {}
        self._lost = False  # the lock connection broke since ``alive`` last asked

    def take(self, connection_id: uuid.UUID, server: tuple[str, str] | None) -> Refused | None:
        """Claim the connection, and for ``server`` (host, account) a session of each
        budget; None when granted, else why not (nothing is held then)."""
        if not self._locking or connection_id in self._held:
            return None
        own = int.from_bytes(
            blake2b(connection_id.bytes, digest_size=8).digest(), "big", signed=True
        )
        held: list[tuple[int, int]] = []
        wanted = [(own, range(_OWN, _OWN + 1), "another watcher holds it")]
        if server is not None:
            host, account = server
            wanted += [
                (
                    lock_key(account_budget(host, account)),
                    watch_slots(self._per_account),
                    "the account's session budget (MAILINTAKE_MAX_SESSIONS_PER_ACCOUNT="
                    f"{self._per_account}) has no session free for watching: polls keep "
                    f"{self._per_account - len(watch_slots(self._per_account))}",
                ),
                (
                    lock_key(host_budget(host)),
                    watch_slots(self._per_host),
                    "the host's session budget (MAILINTAKE_MAX_SESSIONS_PER_HOST="
                    f"{self._per_host}) has no session free for watching: polls keep "
                    f"{self._per_host - len(watch_slots(self._per_host))}",
                ),
            ]
        for key, slots, refusal in wanted:
            try:
                lock = self._try(key, slots)
            except Exception:
                self._drop()  # whatever was held went with the connection
                raise
            if lock is None:
                self._unlock(held)
                return Refused(refusal, elsewhere=not held)
            held.append(lock)
        self._held[connection_id] = held
        return None

    def release(self, connection_id: uuid.UUID) -> None:
        self._unlock(self._held.pop(connection_id, []))

    def alive(self) -> bool:
        """The lock connection answers; False: it broke since the last call, every claim
        was lost with it (and is forgotten here), so the watches must stop."""
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
            except Exception:
                self._drop()
        lost, self._lost = self._lost, False
        return not lost

    def close(self) -> None:
        self._drop()
        self._lost = False

    def _try(self, key: int, slots: range) -> tuple[int, int] | None:
        connection = self._lock_connection()
        mine = {lock for locks in self._held.values() for lock in locks}
        for slot in slots:
            if (key, slot) in mine:
                continue
            if connection.execute(*_statement(_TRY, _TRY_OWN, key, slot)).scalar():
                return key, slot
        return None

    def _unlock(self, locks: list[tuple[int, int]]) -> None:
        if self._connection is None:
            return
        try:
            for key, slot in locks:
                self._connection.execute(*_statement(_UNLOCK, _UNLOCK_OWN, key, slot))
        except Exception:
            self._drop()  # the locks went with the connection

    def _lock_connection(self) -> Connection:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._lost = self._lost or bool(self._held)
        self._held.clear()
        if connection is not None:
            try:
                connection.invalidate()  # never back to the pool with locks held
            finally:
                connection.close()


def _statement(
    pair: TextClause, own: TextClause, key: int, slot: int
) -> tuple[TextClause, dict[str, int]]:
    """The lock statement and its parameters: a budget's slot, or a connection's own claim."""
    if slot == _OWN:
        return own, {"key": key}
    return pair, {"key": key, "slot": slot}
