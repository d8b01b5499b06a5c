"""``/queue`` and ``/log``: the Incoming Mail Queue (retry, delete, download) and the
Incoming Mail Log (per poll, per message)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from mailintake_config_api import connections, incoming
from mailintake_config_api.auth import Admin, Reader, Viewer
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.incoming import EntryKind, QueueState, Window
from mailintake_config_api.schemas import (
    SINCE,
    UNTIL,
    ErrorBody,
    MessageLogEntry,
    Offset,
    Page,
    PlainText,
    PollLogEntry,
    QueueActionDone,
    QueueEntry,
    RowId,
    UtcTime,
)
from mailintake_shared.db.models import Connection

router = APIRouter(responses={code: {"model": ErrorBody} for code in (401, 403, 404, 422)})


def window(
    connection_id: Annotated[uuid.UUID | None, Query(description="Only this connection.")] = None,
    since: Annotated[UtcTime | None, Query(description=SINCE)] = None,
    until: Annotated[UtcTime | None, Query(description=UNTIL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Window:
    return Window(connection_id, since, until, limit, offset)


WindowDep = Annotated[Window, Depends(window)]


def _raw_path(kind: str, entry_id: int) -> str:
    return f"/queue/{kind}/{entry_id}/raw"


@router.get("/queue", response_model=Page[QueueEntry], tags=["queue"], summary="The queue")
def list_queue(
    session: SessionDep,
    _role: Viewer,
    filters: WindowDep,
    state: Annotated[QueueState | None, Query(description="Only entries in this state.")] = None,
) -> Page[QueueEntry]:
    rows, total = incoming.queue_page(session, filters, state)
    items = [QueueEntry(**row._mapping, raw_path=_raw_path(row.kind, row.id)) for row in rows]
    return Page(items=items, total=total, limit=filters.limit, offset=filters.offset)


@router.get(
    "/queue/{kind}/{entry_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}},
    tags=["queue"],
    summary="Download a queue entry's raw MIME (.eml); reader or admin role",
)
def get_queue_raw(kind: EntryKind, entry_id: RowId, session: SessionDep, _role: Reader) -> Response:
    try:
        raw = incoming.raw_of(session, kind, entry_id)
    except incoming.EntryNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such queue entry") from None
    if raw is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no bytes were received")
    return Response(
        content=raw,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{kind}-{entry_id}.eml"'},
    )


@router.post(
    "/queue/{kind}/{entry_id}/retry",
    response_model=QueueActionDone,
    tags=["queue"],
    summary="Retry a queue entry",
)
def retry_queue_entry(
    kind: EntryKind, entry_id: RowId, session: SessionDep, res: ResourcesDep, _role: Admin
) -> QueueActionDone:
    """Awaiting publish: publish now. S/MIME unopened: decrypt again with the connection's
    certificates of now. Action pending: poll now. Failed: download it again."""
    try:
        connection_id, detail, by_poll = incoming.retry(
            session, res.settings, res.secrets, kind, entry_id
        )
    except incoming.EntryNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such queue entry") from None
    row = session.get(Connection, connection_id)
    if by_poll and row is not None and row.enabled:
        connections.request_poll(session, res.settings, row)
    elif by_poll:
        detail += " once the connection is enabled"
    return QueueActionDone(detail=detail)


@router.delete(
    "/queue/{kind}/{entry_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["queue"],
    summary="Delete a queue entry",
)
def delete_queue_entry(
    kind: EntryKind, entry_id: RowId, session: SessionDep, _role: Admin
) -> Response:
    """A stored message is deleted with its unpublished event; a failed one is dismissed."""
    try:
        incoming.remove(session, kind, entry_id)
    except incoming.EntryNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such queue entry") from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/log/polls", response_model=Page[PollLogEntry], tags=["log"], summary="The log of polls"
)
def list_poll_log(
    session: SessionDep,
    _role: Viewer,
    filters: WindowDep,
    outcome: Annotated[PlainText | None, Query(description="`ok`, `failed` or `skipped`.")] = None,
) -> Page[PollLogEntry]:
    rows, total = incoming.poll_page(session, filters, outcome)
    return Page(
        items=[PollLogEntry.model_validate(r) for r in rows],
        total=total,
        limit=filters.limit,
        offset=filters.offset,
    )


@router.get(
    "/log/messages",
    response_model=Page[MessageLogEntry],
    tags=["log"],
    summary="The log of messages",
)
def list_message_log(
    session: SessionDep,
    _role: Viewer,
    filters: WindowDep,
    outcome: Annotated[
        PlainText | None, Query(description="`stored`, `duplicate`, `rejected` or `unfetched`.")
    ] = None,
    poll_id: Annotated[uuid.UUID | None, Query()] = None,
    message_id: Annotated[int | None, Query()] = None,
) -> Page[MessageLogEntry]:
    rows, total = incoming.message_log_page(session, filters, outcome, poll_id, message_id)
    items = [
        MessageLogEntry(
            id=log.id,
            connection_id=log.connection_id,
            poll_id=log.poll_id,
            folder=log.folder,
            server_id=log.server_id,
            message_id=log.message_id,
            outcome=log.outcome,
            detail=log.detail,
            size=log.size,
            downloaded_at=log.downloaded_at,
            logged_at=log.logged_at,
            published_at=published_at,
            action_state=action_state,
            action_applied_at=applied_at,
        )
        for log, published_at, action_state, applied_at in rows
    ]
    return Page(items=items, total=total, limit=filters.limit, offset=filters.offset)
