"""Messages the server did not deliver (a poll's ``unfetched``), kept as pending downloads.

Each poll that tries one again and fails adds an attempt; at ``attempts`` in a row the
message is set aside in the Incoming Mail Queue (``failed_messages``, with the server's
words), from where an administrator can ask for it again. A retried message that the poll
downloaded (or found gone) leaves the pending downloads — unless some of the poll's records
were lost on the way, in which case it stays to be tried again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.orm import Session

from mailintake_shared.db.dialect import insert_for
from mailintake_shared.db.models import FailedMessage, PendingDownload
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import PollResult, Unfetched


def record(
    session: Session, result: PollResult, attempts: int, *, forget_retried: bool
) -> list[dict[str, Any]]:
    """Apply the poll's ``retried`` and ``unfetched`` lists; the Incoming Mail Log's lines."""
    if result.folder is None or not (result.retried or result.unfetched):
        return []
    folder = result.folder
    failed = {u.server_id: u for u in result.unfetched}
    done = [s for s in result.retried if s not in failed]
    if done and forget_retried:
        session.execute(
            delete(PendingDownload).where(
                PendingDownload.connection_id == result.connection_id,
                PendingDownload.folder == folder,
                PendingDownload.server_id.in_(done),
            )
        )
    if not failed:
        return []
    rows = {
        row.server_id: row
        for row in session.scalars(
            select(PendingDownload)
            .where(
                and_(
                    PendingDownload.connection_id == result.connection_id,
                    PendingDownload.folder == folder,
                    PendingDownload.server_id.in_(failed),
                )
            )
            .with_for_update()
        )
    }
    lines: list[dict[str, Any]] = []
    now = utcnow()
    for server_id, unfetched in failed.items():
        row = rows.get(server_id)
        if row is None:
            row = PendingDownload(
                connection_id=result.connection_id,
                folder=folder,
                server_id=server_id,
                uidvalidity=result.uidvalidity if unfetched.uid is not None else None,
                uid=unfetched.uid,
                attempts=0,
                first_failed_at=now,
            )
            session.add(row)
        row.attempts += 1
        row.reason, row.last_failed_at, row.last_poll_id = unfetched.reason, now, result.poll_id
        if row.attempts >= attempts:
            _set_aside(session, result, row, unfetched)
            detail = f"set aside in the Incoming Mail Queue after {row.attempts} attempts"
        else:
            detail = f"attempt {row.attempts} of {attempts}"
        lines.append(_line(result, server_id, f"{detail}: {unfetched.reason}", now))
    return lines


def _set_aside(
    session: Session, result: PollResult, row: PendingDownload, unfetched: Unfetched
) -> None:
    session.execute(
        insert_for(session)(FailedMessage)
        .values(
            connection_id=row.connection_id,
            poll_id=result.poll_id,
            folder=row.folder,
            server_id=row.server_id,
            uidvalidity=row.uidvalidity,
            uid=row.uid,
            reason=f"could not be downloaded in {row.attempts} polls: {unfetched.reason}",
            raw=None,
            failed_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    session.delete(row)


def _line(result: PollResult, server_id: str, detail: str, now: Any) -> dict[str, Any]:
    return {
        "connection_id": result.connection_id,
        "poll_id": result.poll_id,
        "folder": result.folder,
        "server_id": server_id,
        "message_id": None,
        "outcome": "unfetched",
        "detail": detail,
        "size": 0,
        "downloaded_at": None,
        "logged_at": now,
    }
