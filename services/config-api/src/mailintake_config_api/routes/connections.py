"""``/connections``: create, read, search, update, delete, enable and disable."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from mailintake_config_api import connections, probes
from mailintake_config_api.auth import Admin, Viewer
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.errors import InvalidInputError
from mailintake_config_api.lookups import connection_or_404
from mailintake_config_api.replay import TooManyError, replay
from mailintake_config_api.resources import Resources
from mailintake_config_api.schemas import (
    ConnectionCreate,
    ConnectionEnabled,
    ConnectionPage,
    ConnectionPublic,
    ConnectionTestRequest,
    ConnectionTestResult,
    ConnectionUpdate,
    EnableConflict,
    EnableRequest,
    ErrorBody,
    EstimateFailed,
    FieldError,
    Offset,
    PlainText,
    PollAccepted,
    ReplayQueued,
    ReplayRequest,
)
from mailintake_shared.db.models import Connection
from mailintake_shared.db.types import utcnow

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}
router = APIRouter(prefix="/connections", tags=["connections"], responses=ERRORS)


def _shown(session: Session, res: Resources, rows: list[Connection]) -> list[ConnectionPublic]:
    return connections.public(session, rows, res.settings, res.store_waiting.get)


@router.get("", response_model=ConnectionPage, summary="List and search connections")
def list_connections(
    session: SessionDep,
    res: ResourcesDep,
    _role: Viewer,
    q: Annotated[
        PlainText | None,
        Query(
            max_length=255,
            description="Case-insensitive term over name, description, host and username.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
    sort: Annotated[
        connections.Sort,
        Query(description="Order by this column; a leading `-` reverses it (nulls last)."),
    ] = connections.Sort.NAME,
) -> ConnectionPage:
    rows, total = connections.search(session, q, sort, limit, offset)
    return ConnectionPage(
        items=_shown(session, res, rows),
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post(
    "",
    response_model=ConnectionPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a connection (disabled)",
)
def create_connection(
    body: ConnectionCreate, session: SessionDep, res: ResourcesDep, _role: Admin
) -> ConnectionPublic:
    try:
        row = connections.create(session, res.settings, res.secrets, body)
    except connections.NameTakenError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"a connection named {exc} already exists"
        ) from None
    return _shown(session, res, [row])[0]


@router.get("/{connection_id}", response_model=ConnectionPublic, summary="Show a connection")
def get_connection(
    connection_id: uuid.UUID, session: SessionDep, res: ResourcesDep, _role: Viewer
) -> ConnectionPublic:
    row = connection_or_404(session, connection_id)
    return _shown(session, res, [row])[0]


@router.patch("/{connection_id}", response_model=ConnectionPublic, summary="Update a connection")
def update_connection(
    connection_id: uuid.UUID,
    body: ConnectionUpdate,
    session: SessionDep,
    res: ResourcesDep,
    _role: Admin,
) -> ConnectionPublic:
    row = connection_or_404(session, connection_id)
    try:
        connections.update(session, res.settings, res.secrets, row, body)
    except connections.NameTakenError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"a connection named {exc} already exists"
        ) from None
    return _shown(session, res, [row])[0]


@router.delete(
    "/{connection_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a connection"
)
def delete_connection(
    connection_id: uuid.UUID, session: SessionDep, res: ResourcesDep, _role: Admin
) -> Response:
    connections.delete(session, res.settings, connection_or_404(session, connection_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{connection_id}/enable",
    response_model=ConnectionEnabled,
    summary="Enable polling (with the estimate acknowledged)",
    responses={
        409: {"model": EnableConflict},
        502: {"model": EstimateFailed},
    },
)
def enable_connection(
    connection_id: uuid.UUID,
    session: SessionDep,
    res: ResourcesDep,
    _role: Admin,
    body: Annotated[EnableRequest | None, Body()] = None,
) -> ConnectionEnabled | JSONResponse:
    """Estimates the messages the first poll would download (the poll's own rule, on the
    server now). Above `MAILINTAKE_ENABLE_ACK_THRESHOLD` (0 by default) the answer is 409 with
    the estimate, and the connection is enabled only when a request acknowledges that number
    (or a larger one) in `acknowledge_messages`. Once enabled, its first poll is requested at
    once (`first_poll` says so)."""
    row = connection_or_404(session, connection_id)
    was_enabled = row.enabled
    try:
        probes.enable(session, res, row, body or EnableRequest())
    except probes.EstimateRequiredError as exc:
        count = exc.estimate.messages
        said = (
            f"acknowledge_messages {exc.acknowledged} is fewer than the {count} messages"
            if exc.acknowledged is not None
            else f"the first poll would download {count} messages"
        )
        conflict = EnableConflict(
            detail=f'{said}; repeat with {{"acknowledge_messages": {count}}} to enable',
            estimate=exc.estimate,
        )
        return JSONResponse(conflict.model_dump(mode="json"), status.HTTP_409_CONFLICT)
    except probes.EstimateFailedError as exc:
        failed = EstimateFailed(
            detail=f"the server could not be asked for an estimate: {exc.result.error}",
            test=exc.result,
        )
        return JSONResponse(failed.model_dump(mode="json"), status.HTTP_502_BAD_GATEWAY)
    shown = _shown(session, res, [row])[0]
    every = f"then every {row.interval_minutes} min"
    first_poll = (
        f"already enabled: polled every {row.interval_minutes} min"
        if was_enabled
        else f"at once (requested with the enabling), {every}"
    )
    return ConnectionEnabled(**dict(shown), first_poll=first_poll)


@router.post(
    "/test",
    response_model=ConnectionTestResult,
    summary="Test an unsaved connection",
    tags=["connections"],
)
def check_unsaved_connection(
    body: ConnectionTestRequest, session: SessionDep, res: ResourcesDep, _role: Admin
) -> ConnectionTestResult:
    """DNS, TCP connect, TLS handshake, greeting, STARTTLS, login and folder, each bounded by
    the connection's time-out; the result names the step that failed."""
    row = connections.preview(session, res.settings, res.secrets, body)
    return probes.test(row, res)


@router.post(
    "/{connection_id}/test", response_model=ConnectionTestResult, summary="Test a connection"
)
def check_connection(
    connection_id: uuid.UUID, session: SessionDep, res: ResourcesDep, _role: Admin
) -> ConnectionTestResult:
    return probes.test(connection_or_404(session, connection_id), res)


@router.post("/{connection_id}/disable", response_model=ConnectionPublic, summary="Disable polling")
def disable_connection(
    connection_id: uuid.UUID, session: SessionDep, res: ResourcesDep, _role: Admin
) -> ConnectionPublic:
    row = connections.set_enabled(
        session, res.settings, connection_or_404(session, connection_id), False
    )
    return _shown(session, res, [row])[0]


@router.post(
    "/{connection_id}/poll",
    response_model=PollAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Poll now",
)
def poll_connection(
    connection_id: uuid.UUID, session: SessionDep, res: ResourcesDep, _role: Admin
) -> PollAccepted:
    """Ask the scheduler for a poll at once (right after the current one, if one is running).
    409 says why a poll cannot run: the connection is disabled, or not authorized."""
    row = connection_or_404(session, connection_id)
    shown = _shown(session, res, [row])[0]
    if not row.enabled:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"the connection is disabled: enable it first (POST /connections/{row.id}"
            "/enable)",
        )
    if shown.authorization not in (None, "authorized", "app_only"):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"the connection is {shown.authorization}: authorize it first "
            f"(POST /connections/{row.id}/authorize)",
        )
    event = connections.request_poll(session, res.settings, row)
    busy = connections.poll_in_progress(session, row.id)
    return PollAccepted(
        connection_id=row.id,
        requested_at=event.requested_at,
        poll_in_progress=busy,
        detail="poll requested: it runs right after the poll under way"
        if busy
        else "poll requested: it runs at once",
    )


@router.post(
    "/{connection_id}/replay",
    response_model=ReplayQueued,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Announce a connection's stored messages again on mail.stored",
)
def replay_messages(
    connection_id: uuid.UUID,
    body: ReplayRequest,
    session: SessionDep,
    res: ResourcesDep,
    _role: Admin,
) -> ReplayQueued:
    """The events are those of the first time, with the same ``message_id``s."""
    connection_or_404(session, connection_id)
    until = body.until or utcnow()
    if until <= body.since:
        raise InvalidInputError([FieldError(field="until", rule="must be after `since`")])
    try:
        count = replay(session, res.settings, connection_id, body.since, until)
    except TooManyError as exc:
        raise InvalidInputError([FieldError(field="since", rule=str(exc))]) from exc
    return ReplayQueued(messages=count)
