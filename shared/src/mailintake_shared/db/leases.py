"""One owner per mailbox: a lease per connection with a fencing token.

A fetcher takes the lease before it polls (a new token, one higher than any before), renews it
while the poll runs, and gives it back after. While another fetcher's lease is live, the
connection is not polled twice; a fetcher that crashed stops renewing, so its connections are
polled again once its lease runs out (seconds, not the length of a poll).

A lease taken over — its holder did not give it back before it ran out: it was paused, or cut
off from the database — raises the connection's *fence* to the new token. That fetcher finds
out before it applies server actions, and the store drops records whose token is below the
fence: it can neither change the mailbox nor advance its cursor. A lease given back does not
raise the fence, so the records of a poll that ended cleanly are stored even when the next
slice of the mailbox (another lease) is already under way.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_shared.db.dialect import insert_for
from mailintake_shared.db.models import PollLease
from mailintake_shared.db.types import utcnow


def acquire(session: Session, connection_id: uuid.UUID, holder: str, seconds: float) -> int | None:
    """A new fencing token, or None while another holder's lease is live."""
    now = utcnow()
    insert = insert_for(session)
    session.execute(  # the row exists before it is locked, even for two first-comers at once
        insert(PollLease)
        .values(connection_id=connection_id, token=0, holder="", expires_at=now)
        .on_conflict_do_nothing()
    )
    lease = session.get(PollLease, connection_id, with_for_update=True, populate_existing=True)
    assert lease is not None
    if lease.expires_at > now and lease.holder != holder:
        return None
    taken_over = lease.holder not in ("", holder)  # it ran out without being given back
    lease.token += 1
    if taken_over:
        lease.fence = lease.token
    lease.holder, lease.expires_at = holder, now + timedelta(seconds=seconds)
    session.flush()
    return lease.token


def held(session: Session, connection_id: uuid.UUID, token: int) -> bool:
    lease = session.get(PollLease, connection_id)
    return lease is not None and lease.token == token and lease.expires_at > utcnow()


def renew(session: Session, connection_id: uuid.UUID, token: int, seconds: float) -> bool:
    """Extend a live lease; False if it has ended or was taken over (then it stays so)."""
    lease = session.get(PollLease, connection_id, with_for_update=True, populate_existing=True)
    now = utcnow()
    if lease is None or lease.token != token or lease.expires_at <= now:
        return False
    lease.expires_at = now + timedelta(seconds=seconds)
    return True


def release(session: Session, connection_id: uuid.UUID, token: int) -> None:
    """Give the lease back (its poll ended): the next one takes it without raising the fence."""
    lease = session.get(PollLease, connection_id, with_for_update=True)
    if lease is not None and lease.token == token:
        lease.expires_at, lease.holder = utcnow(), ""


def fences(session: Session, connection_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Per connection, the token below which records are a taken-over fetcher's."""
    rows = session.execute(
        select(PollLease.connection_id, PollLease.fence).where(
            PollLease.connection_id.in_(connection_ids)
        )
    ).all()
    return {row.connection_id: row.fence for row in rows}
