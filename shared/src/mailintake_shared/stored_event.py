"""``mail.stored`` events, built from the stored message rows when they are published.

The outbox holds only the id of the message a ``mail.stored`` record announces: the row
already has everything the event says, so the raw mail is written to the database once
and not a second time inside the event.

S/MIME findings are in the event's ``smime`` alone: ``problems`` leaves out the copy of
``smime.problem`` the row keeps among its problems (the Incoming Mail Queue shows it there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Message
from mailintake_shared.events import HeaderSummary, MailStored, SmimeInfo, b64

_BODY = func.coalesce(Message.unwrapped, Message.raw)  # the decrypted form when there is one
SMIME_PROBLEM = "S/MIME: "  # how the row's problems mark the copy of smime.problem


class Announcement(NamedTuple):
    event: MailStored
    replay: bool  # this event went out before (an operator's replay)


def load_mail_stored(
    session: Session, message_ids: Iterable[int], inline_max: int
) -> dict[int, Announcement]:
    """The events of these messages, by id; a message deleted since is absent. Bodies larger
    than ``inline_max`` are not read (their events carry only ``raw_path``)."""
    rows = session.execute(
        select(
            Message.id,
            Message.connection_id,
            Message.folder,
            Message.server_id,
            Message.size,
            Message.sha256,
            Message.internal_date,
            Message.stored_at,
            Message.header_from,
            Message.header_to,
            Message.header_cc,
            Message.subject,
            Message.header_date,
            Message.message_id_header,
            Message.in_reply_to,
            Message.references,
            Message.problems,
            Message.smime,
            Message.published_at,
            case((func.length(_BODY) <= inline_max, _BODY), else_=None).label("body"),
        ).where(Message.id.in_(list(message_ids)))
    )
    return {
        row.id: Announcement(
            MailStored(
                message_id=row.id,
                connection_id=row.connection_id,
                folder=row.folder,
                server_id=row.server_id,
                size=row.size,
                sha256=row.sha256,
                internal_date=row.internal_date,
                stored_at=row.stored_at,
                headers=HeaderSummary(
                    from_=row.header_from,
                    to=row.header_to,
                    cc=row.header_cc,
                    subject=row.subject,
                    date=row.header_date,
                    message_id=row.message_id_header,
                    in_reply_to=row.in_reply_to,
                    references=row.references,
                ),
                problems=[
                    p for p in json.loads(row.problems or "[]") if not p.startswith(SMIME_PROBLEM)
                ],
                raw_b64=b64(bytes(row.body)) if row.body is not None else None,
                raw_path=f"/messages/{row.id}/raw",
                smime=SmimeInfo.model_validate_json(row.smime) if row.smime else None,
            ),
            replay=row.published_at is not None,
        )
        for row in rows
    }
