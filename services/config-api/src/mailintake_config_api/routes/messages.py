"""``/messages``: a stored message's summary and its raw MIME."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from mailintake_config_api.auth import Reader, Viewer
from mailintake_config_api.deps import SessionDep
from mailintake_config_api.schemas import (
    ErrorBody,
    MessageInfo,
    RowId,
)
from mailintake_shared.db.models import Message
from mailintake_shared.events import SmimeInfo

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
def get_message(message_id: RowId, session: SessionDep, _role: Viewer) -> MessageInfo:
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
        smime=SmimeInfo.model_validate_json(row.smime) if row.smime else None,
    )


@router.get(
    "/{message_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}},
    summary="The raw MIME of a stored message (.eml); reader or admin role",
)
def get_raw(
    message_id: RowId,
    session: SessionDep,
    _role: Reader,
    original: Annotated[
        bool,
        Query(
            description="An S/MIME message as fetched, not decrypted (the default serves it "
            "with the layers its connection's certificates opened removed)."
        ),
    ] = False,
) -> Response:
    row = _get(session, message_id)
    content = row.raw if original or row.unwrapped is None else row.unwrapped
    return Response(
        content=bytes(content),
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="message-{row.id}.eml"'},
    )
