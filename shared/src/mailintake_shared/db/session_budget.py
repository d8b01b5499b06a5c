"""The session budget's keys, shared by the fetchers' polls and the watchers' sessions.

Mail servers cap concurrent sessions (Dovecot's ``mail_max_userip_connections``, Gmail's 15
per account). ``MAILINTAKE_MAX_SESSIONS_PER_ACCOUNT`` and ``MAILINTAKE_MAX_SESSIONS_PER_HOST``
are budgets of *slots*, each a PostgreSQL advisory lock ``(key, slot)`` held for as long as
the session lasts: a poll holds one slot of its account and one of its host for its length;
a watch holds one of each for as long as it watches. A watch may only take a slot of the
upper half of each budget (``watch_slots``), so polls always keep the lower half: watching
never starves polling, and a budget of one session leaves nothing to watch with.
"""

from __future__ import annotations

import hashlib


def lock_key(name: str) -> int:
    """A stable signed 32-bit key for ``pg_try_advisory_lock(key, slot)``."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True
    )


def account_budget(host: str, account: str) -> str:
    return f"account:{host.lower()}:{account.lower()}"


def host_budget(host: str) -> str:
    return f"host:{host.lower()}"


def watch_slots(slots: int) -> range:
    """The slots of a budget of ``slots`` a watch may hold: the upper half (none of 1)."""
    return range(slots - slots // 2, slots)
