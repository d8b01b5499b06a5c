"""The Incoming Mail Queue (retry, delete, download for the roles allowed to) and the
Incoming Mail Log (polls and messages, filtered by connection, outcome and time), paged."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_config_api import incoming
from mailintake_config_api.auth import require_reader
from mailintake_config_api.console.session import PATH
from mailintake_config_api.console.web import (
    AdminDep,
    ConsoleError,
    UserDep,
    id_or_none,
    redirect,
    render,
)
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.incoming import EntryKind, QueueState, Window
from mailintake_config_api.routes import incoming as api
from mailintake_config_api.routes import messages as messages_api
from mailintake_config_api.schemas import PlainText, RowId, utc
from mailintake_shared.db.models import Connection

router = APIRouter(prefix=PATH, include_in_schema=False)
PAGE_SIZE = 50
POLL_OUTCOMES = ("ok", "failed", "skipped")
MESSAGE_OUTCOMES = ("stored", "duplicate", "rejected", "unfetched")
Offset = Annotated[int, Query(ge=0, le=2**62)]


def _names(session: Session) -> dict[uuid.UUID, str]:
    return {row.id: row.name for row in session.execute(select(Connection.id, Connection.name))}


def _time(text: str, field: str) -> datetime | None:
    """A ``datetime-local`` input's value (or any ISO 8601 time), read as UTC when it has no
    offset."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConsoleError(422, f"{field} must be a date and time (YYYY-MM-DDTHH:MM)") from None
    try:
        return utc(value)
    except ValueError as exc:  # a time, but none in UTC
        raise ConsoleError(422, f"{field} {exc}") from None


@router.get("/queue")
def queue_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
    connection: str = "",
    state: QueueState | None = None,
    offset: Offset = 0,
) -> Response:
    window = Window(id_or_none(connection, "connection"), limit=PAGE_SIZE, offset=offset)
    rows, total = incoming.queue_page(session, window, state)
    return render(
        request,
        res,
        "queue.html",
        user,
        rows=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        names=_names(session),
        filters={"connection": connection, "state": state.value if state else ""},
        states=list(QueueState),
    )


@router.get("/queue/{kind}/{entry_id}/raw")
def queue_raw(kind: EntryKind, entry_id: RowId, user: UserDep, session: SessionDep) -> Response:
    """The entry's .eml, for the roles that may read mail (the API's rule and answer)."""
    require_reader(user.role)
    return api.get_queue_raw(kind, entry_id, session, user.role)


@router.post("/queue/{kind}/{entry_id}/retry")
def queue_retry(
    request: Request,
    kind: EntryKind,
    entry_id: RowId,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    done = api.retry_queue_entry(kind, entry_id, session, res, user.role)
    return redirect(request, f"{PATH}/queue", f"Retried: {done.detail}.")


@router.post("/queue/{kind}/{entry_id}/delete")
def queue_delete(
    request: Request, kind: EntryKind, entry_id: RowId, user: AdminDep, session: SessionDep
) -> Response:
    api.delete_queue_entry(kind, entry_id, session, user.role)
    what = "deleted with its unpublished event" if kind is EntryKind.MESSAGE else "dismissed"
    return redirect(request, f"{PATH}/queue", f"Queue entry {what}.")


@router.get("/log")
def log_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
    view: Annotated[str, Query(pattern="^(polls|messages)$")] = "polls",
    connection: str = "",
    outcome: Annotated[PlainText, Query(max_length=16)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    offset: Offset = 0,
) -> Response:
    window = Window(
        id_or_none(connection, "connection"),
        _time(since, "since"),
        _time(until, "until"),
        PAGE_SIZE,
        offset,
    )
    rows: list[Any]
    if view == "polls":
        rows, total = incoming.poll_page(session, window, outcome or None)
    else:
        rows, total = incoming.message_log_page(session, window, outcome or None, None, None)
    return render(
        request,
        res,
        "log.html",
        user,
        view=view,
        rows=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        names=_names(session),
        outcomes=POLL_OUTCOMES if view == "polls" else MESSAGE_OUTCOMES,
        filters={
            "view": view,
            "connection": connection,
            "outcome": outcome,
            "since": since,
            "until": until,
        },
    )


@router.get("/messages/{message_id}/raw")
def message_raw(message_id: RowId, user: UserDep, session: SessionDep) -> Response:
    """A stored message's .eml (decrypted when its certificates opened it), as the API's."""
    require_reader(user.role)
    return messages_api.get_raw(message_id, session, user.role, original=False)
