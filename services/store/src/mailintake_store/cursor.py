"""Moving an IMAP folder's cursor on a poll's result (the per-poll ledger).

The cursor is the highest UID up to which every message of the folder's UIDVALIDITY epoch is
accounted for (stored, confirmed gone, pending a new download, or set aside in the Incoming
Mail Queue). A poll's result says where it may go (``cursor_to``); the store moves it only
when every message the poll published is committed (the caller checks) and only from where the
poll started (``cursor_from``), so a poll that came after one whose records were lost never
moves it past that gap.
"""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from mailintake_shared.db.models import MailboxState, Message, PendingDownload
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import PollResult
from mailintake_shared.logging import get_logger

log = get_logger(__name__)


def advance(session: Session, result: PollResult) -> None:
    """Fix the first-sync baseline the poll set, and move the cursor to ``cursor_to``.

    A result from a new UIDVALIDITY epoch (``cursor_from`` 0) starts the epoch: the old epoch's
    pending server actions and downloads mean nothing on the server any more.
    """
    if result.folder is None or result.uidvalidity is None:
        return
    state = session.get(MailboxState, (result.connection_id, result.folder), with_for_update=True)
    if state is None:
        state = MailboxState(
            connection_id=result.connection_id,
            folder=result.folder,
            uidvalidity=result.uidvalidity,
            last_uid=0,
            baseline_uid=result.baseline_uid,
        )
        session.add(state)
    elif state.uidvalidity != result.uidvalidity:
        if result.cursor_from not in (None, 0):
            return  # a result of an epoch that is not the folder's: changes nothing
        _end_epoch(session, state, result.uidvalidity)
        state.baseline_uid = result.baseline_uid
    elif state.baseline_uid is None and result.baseline_uid is not None:
        state.baseline_uid = result.baseline_uid  # the first poll's baseline stands
    if result.cursor_to is not None and result.cursor_from is not None:
        if state.last_uid >= result.cursor_from:
            state.last_uid = max(state.last_uid, result.cursor_to)
        else:
            log.warning(
                "a poll's result does not continue from the folder's cursor; the cursor stays",
                connection_id=str(result.connection_id),
                cursor=state.last_uid,
                poll_started_from=result.cursor_from,
            )
    state.updated_at = utcnow()


def _end_epoch(session: Session, state: MailboxState, uidvalidity: int) -> None:
    old = state.uidvalidity
    session.execute(
        update(Message)
        .where(
            Message.connection_id == state.connection_id,
            Message.folder == state.folder,
            Message.uidvalidity != uidvalidity,
            Message.action_state == "pending",
        )
        .values(action_state="stale")
    )
    session.execute(
        delete(PendingDownload).where(
            PendingDownload.connection_id == state.connection_id,
            PendingDownload.folder == state.folder,
            PendingDownload.uidvalidity != uidvalidity,
        )
    )
    log.info(
        "the folder's UIDVALIDITY changed: its cursor starts again",
        connection_id=str(state.connection_id),
        old=old,
        new=uidvalidity,
    )
    state.uidvalidity, state.last_uid = uidvalidity, 0
