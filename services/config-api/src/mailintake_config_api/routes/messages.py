"""``/messages``: a stored message's summary and its raw MIME."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Response, status

from mailintake_config_api.auth import Viewer
from mailintake_config_api.deps import SessionDep
from mailintake_config_api.schemas import ErrorBody, MessageInfo
from mailintake_shared.db.models import Message

router = APIRouter(
    prefix="/messages",
    tags=["messages"],
    responses={code: {"model": ErrorBody} for code in (401, 403, 404, 422)},
)


def _get(session: SessionDep, message_id: int) -> Message:
    row = session.get(Message, message_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no message with this id")
    return row


@router.get("/{message_id}", response_model=MessageInfo, summary="A stored message's summary")
def get_message(message_id: int, session: SessionDep, _role: Viewer) -> MessageInfo:
    row = _get(session, message_id)
    return MessageInfo(
        id=row.id,
        connection_id=row.connection_id,
        folder=row.folder,
        server_id=row.server_id,
        size=row.size,
        sha256=row.sha256,
        internal_date=row.internal_date,
        stored_at=row.stored_at,
        subject=row.subject,
        header_from=row.header_from,
        message_id_header=row.message_id_header,
        problems=json.loads(row.problems) if row.problems else [],
        action_state=row.action_state,
        raw_path=f"/messages/{row.id}/raw",
    )


@router.get(
    "/{message_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}},
    summary="The raw MIME of a stored message (.eml)",
)
def get_raw(message_id: int, session: SessionDep, _role: Viewer) -> Response:
    row = _get(session, message_id)
    return Response(
        content=bytes(row.raw),
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="message-{row.id}.eml"'},
    )
