"""``mail.stored`` records: the event's JSON and its CloudEvents headers, made in one place
for the two places that publish them — the store, from the batch in memory right after its
commit, and the outbox relay, from the message rows (after a crash, an outage, a replay).

The outbox holds only the id of the message a ``mail.stored`` record announces: the row
already has everything the event says, so the raw mail is written to the database once
and not a second time inside the event.

S/MIME findings are in the event's ``smime`` alone: ``problems`` leaves out the copy of
``smime.problem`` the row keeps among its problems (the Incoming Mail Queue shows it there).

The JSON is written directly (``json.dumps`` of the fields in ``MailStored``'s order), not
through the pydantic model: building the model cost more than the rest of announcing a
message. ``tests/unit/test_stored_event.py`` checks that it is what ``MailStored`` reads and
writes.
"""

from __future__ import annotations

import binascii
import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from mailintake_shared.cloudevents import Headers, mail_stored_headers
from mailintake_shared.db.models import Message
from mailintake_shared.events import HeaderSummary, SmimeInfo
from mailintake_shared.topics import record_key

_BODY = func.coalesce(Message.unwrapped, Message.raw)  # the decrypted form when there is one
SMIME_PROBLEM = "S/MIME: "  # how the row's problems mark the copy of smime.problem


class StoredRecord(NamedTuple):
    """A ``mail.stored`` record, ready to send."""

    message_id: int
    key: bytes  # the connection id
    value: bytes
    headers: Headers


def mail_stored(
    prefix: str,
    *,
    message_id: int,
    connection_id: uuid.UUID,
    folder: str,
    server_id: str,
    size: int,
    sha256: str,
    internal_date: datetime | None,
    stored_at: datetime,
    headers: HeaderSummary,
    problems: Iterable[str],
    body: bytes | None,
    smime: SmimeInfo | None,
    replay: bool = False,
) -> StoredRecord:
    """The record announcing a stored message; ``body`` is inline when given (the caller
    leaves out bodies over the inline limit), ``problems`` are the row's."""
    value: dict[str, Any] = {
        "schema_version": 1,
        "message_id": message_id,
        "connection_id": str(connection_id),
        "folder": folder,
        "server_id": server_id,
        "size": size,
        "sha256": sha256,
        "internal_date": _time(internal_date) if internal_date is not None else None,
        "stored_at": _time(stored_at),
        "headers": {
            "from": headers.from_,
            "to": headers.to,
            "cc": headers.cc,
            "subject": headers.subject,
            "date": headers.date,
            "message_id": headers.message_id,
            "in_reply_to": headers.in_reply_to,
            "references": headers.references,
        },
        "problems": [p for p in problems if not p.startswith(SMIME_PROBLEM)],
        "raw_path": f"/messages/{message_id}/raw",
        "smime": smime.model_dump(mode="json") if smime is not None else None,
    }
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    # The inline body goes in last, as it is: base64 needs no JSON escaping, and scanning
    # it for some cost more than the rest of the event.
    inline = b'"' + binascii.b2a_base64(body, newline=False) + b'"' if body is not None else b"null"
    decrypted = smime is not None and smime.decrypted_with is not None
    return StoredRecord(
        message_id,
        record_key(connection_id),
        encoded[:-1] + b',"raw_b64":' + inline + b"}",
        mail_stored_headers(prefix, message_id, decrypted, stored_at, replay=replay),
    )


def _time(at: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, microseconds when not zero: as pydantic writes it."""
    return at.isoformat().replace("+00:00", "Z")


def load_mail_stored(
    session: Session, message_ids: Iterable[int], inline_max: int, prefix: str
) -> dict[int, StoredRecord]:
    """The records of these messages, by id, from their rows; a message deleted since is
    absent. Bodies larger than ``inline_max`` are not read (their events carry only
    ``raw_path``). A message announced before is a replay."""
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
        row.id: mail_stored(
            prefix,
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
            problems=json.loads(row.problems or "[]"),
            body=bytes(row.body) if row.body is not None else None,
            smime=SmimeInfo.model_validate_json(row.smime) if row.smime else None,
            replay=row.published_at is not None,
        )
        for row in rows
    }
