"""The Incoming Mail Connections pages: the list (search as you type, sort, pages), add and
edit forms that change with the protocol, and each connection's page with its actions (test,
enable with the estimate, poll now, disable, authorize, delete).

Every change goes through the functions the API's routes call, in one transaction committed
before the answer, and every refusal is shown in the API's words.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_config_api import connections, incoming, probes
from mailintake_config_api.console.forms import ConnectionForm, InvalidFormError, parsed
from mailintake_config_api.console.session import PATH
from mailintake_config_api.console.views import health, steps_of, watch
from mailintake_config_api.console.web import (
    AdminDep,
    ConsoleError,
    FormDep,
    UserDep,
    id_or_none,
    redirect,
    render,
)
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.errors import InvalidInputError
from mailintake_config_api.resources import Resources
from mailintake_config_api.routes import connections as api
from mailintake_config_api.routes import oauth as oauth_api
from mailintake_config_api.schemas import (
    ConnectionCreate,
    ConnectionPublic,
    ConnectionTestRequest,
    ConnectionUpdate,
    EnableRequest,
    FieldError,
    PlainText,
)
from mailintake_shared.db.models import Connection, OAuthCredential
from mailintake_shared.domain import Protocol

router = APIRouter(prefix=PATH, include_in_schema=False)
PAGE_SIZE = 50


def _shown(session: Session, res: Resources, row: Connection) -> ConnectionPublic:
    return connections.public(session, [row], res.settings, res.store_waiting.get)[0]


def _row(session: Session, connection_id: uuid.UUID) -> Connection:
    row = session.get(Connection, connection_id)
    if row is None:
        raise ConsoleError(404, "no connection with this id (deleted?)")
    return row


@router.get("/connections")
def connection_list(
    request: Request,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
    q: Annotated[PlainText, Query(max_length=255)] = "",
    sort: connections.Sort = connections.Sort.NAME,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    page = api.list_connections(session, res, user.role, q, PAGE_SIZE, offset, sort)
    return render(
        request,
        res,
        "connections.html",
        user,
        page=page,
        rows=[(item, health(item), watch(item)) for item in page.items],
        q=q,
        sort=sort.value,
        page_size=PAGE_SIZE,
    )


def _credentials(session: Session) -> list[OAuthCredential]:
    return list(session.scalars(select(OAuthCredential).order_by(OAuthCredential.name)))


def _form_page(
    request: Request,
    user: Any,
    session: Session,
    res: Resources,
    form: ConnectionForm,
    status: int = 200,
    **context: Any,
) -> Response:
    return render(
        request,
        res,
        "connection_form.html",
        user,
        status,
        form=form,
        credentials=_credentials(session),
        settings=res.settings,
        **context,
    )


@router.get("/connections/new")
def new_connection(
    request: Request,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
    protocol: Protocol = Protocol.IMAP,
) -> Response:
    if not user.can_change:
        raise ConsoleError(403, f"adding a connection needs the admin role; you are {user.role}")
    form = ConnectionForm.of({"protocol": protocol.value, "tls_verify": "on"}, res.settings)
    return _form_page(request, user, session, res, form)


@router.post("/connections/form")
def refresh_form(
    request: Request, user: AdminDep, session: SessionDep, res: ResourcesDep, fields: FormDep
) -> Response:
    """The form again with the fields of the protocol (and transport) chosen, values kept."""
    editing = id_or_none(fields.get("connection_id", ""), "connection_id")
    form = ConnectionForm.of(fields, res.settings, str(editing) if editing else None)
    return _form_page(request, user, session, res, form)


@router.post("/connections/test")
def test_unsaved(
    request: Request, user: AdminDep, session: SessionDep, res: ResourcesDep, fields: FormDep
) -> Response:
    """Test the connection the form describes, before saving it."""
    form = ConnectionForm.of(fields, res.settings)
    try:
        body = form.body(fields.get("password", ""), update=False)
        if not body["name"]:
            del body["name"]  # not needed to test
        tested = parsed(ConnectionTestRequest, body)
        row = connections.preview(session, res.settings, res.secrets, tested)
    except (InvalidFormError, InvalidInputError) as exc:
        form.fail(exc.errors)
        return _form_page(request, user, session, res, form, 422)
    result = probes.test(row, res)
    item = connections.to_public(row)
    return _form_page(request, user, session, res, form, steps=steps_of(result, item))


@router.post("/connections")
def create_connection(
    request: Request, user: AdminDep, session: SessionDep, res: ResourcesDep, fields: FormDep
) -> Response:
    form = ConnectionForm.of(fields, res.settings)

    def create() -> Connection:
        body = parsed(ConnectionCreate, form.body(fields.get("password", ""), update=False))
        return connections.create(session, res.settings, res.secrets, body)

    done = "Connection created (disabled): test it, then enable it."
    return _saved(request, user, session, res, form, create, done)


def _saved(
    request: Request,
    user: Any,
    session: Session,
    res: Resources,
    form: ConnectionForm,
    save: Callable[[], Connection],
    done: str,
) -> Response:
    """The connection's page after ``save``; or the form again with the API's refusals."""
    try:
        row = save()
    except (InvalidFormError, InvalidInputError) as exc:
        form.fail(exc.errors)
        return _form_page(request, user, session, res, form, 422)
    except connections.NameTakenError as exc:
        form.fail([FieldError(field="name", rule=f"a connection named {exc} already exists")])
        return _form_page(request, user, session, res, form, 409)
    return redirect(request, f"{PATH}/connections/{row.id}", done)


@router.get("/connections/{connection_id}")
def connection_page(
    request: Request,
    connection_id: uuid.UUID,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    return _connection(request, user, session, res, _row(session, connection_id))


def _connection(
    request: Request,
    user: Any,
    session: Session,
    res: Resources,
    row: Connection,
    status: int = 200,
    **context: Any,
) -> Response:
    item = _shown(session, res, row)
    polls, _ = incoming.poll_page(session, incoming.Window(connection_id=row.id, limit=10), None)
    return render(
        request,
        res,
        "connection.html",
        user,
        status,
        item=item,
        health=health(item),
        watch=watch(item),
        polls=polls,
        credential=session.get(OAuthCredential, row.oauth_credential_id)
        if row.oauth_credential_id
        else None,
        **context,
    )


@router.get("/connections/{connection_id}/edit")
def edit_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    if not user.can_change:
        raise ConsoleError(403, f"editing a connection needs the admin role; you are {user.role}")
    item = _shown(session, res, _row(session, connection_id))
    return _form_page(request, user, session, res, ConnectionForm.of_connection(item, res.settings))


@router.post("/connections/{connection_id}")
def update_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
    fields: FormDep,
) -> Response:
    row = _row(session, connection_id)
    form = ConnectionForm.of(fields, res.settings, str(row.id))
    form.has_password = row.password_enc is not None

    def update() -> Connection:
        body = parsed(ConnectionUpdate, form.body(fields.get("password", ""), update=True))
        return connections.update(session, res.settings, res.secrets, row, body)

    return _saved(request, user, session, res, form, update, "Changes saved.")


@router.post("/connections/{connection_id}/test")
def test_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    row = _row(session, connection_id)
    result = probes.test(row, res)
    steps = steps_of(result, _shown(session, res, row))
    return _connection(request, user, session, res, row, steps=steps, tested_ok=result.ok)


@router.post("/connections/{connection_id}/enable")
def enable_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
    fields: FormDep,
) -> Response:
    """Asks the server for the estimate; enables at once when there is nothing to download,
    else shows the number and enables only when the operator confirms it (the same number,
    sent back as ``acknowledge_messages``)."""
    row = _row(session, connection_id)
    try:
        asked = {"acknowledge_messages": fields.get("acknowledge_messages") or None}
        request_body = parsed(EnableRequest, asked)
    except InvalidFormError as exc:
        raise ConsoleError(422, "; ".join(e.rule for e in exc.errors)) from None
    try:
        probes.enable(session, res, row, request_body)
    except probes.EstimateRequiredError as exc:
        return _connection(request, user, session, res, row, estimate=exc.estimate)
    except probes.EstimateFailedError as exc:
        steps = steps_of(exc.result, _shown(session, res, row))
        return _connection(request, user, session, res, row, 502, steps=steps, estimate_failed=True)
    every = f"then every {row.interval_minutes} min"
    return redirect(
        request, f"{PATH}/connections/{row.id}", f"Enabled: the first poll runs at once, {every}."
    )


@router.post("/connections/{connection_id}/disable")
def disable_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    row = connections.set_enabled(session, res.settings, _row(session, connection_id), False)
    return redirect(request, f"{PATH}/connections/{row.id}", "Disabled: no more polls.")


@router.post("/connections/{connection_id}/poll")
def poll_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    row = _row(session, connection_id)
    try:
        accepted = api.poll_connection(row.id, session, res, user.role)
    except HTTPException as exc:
        return redirect(request, f"{PATH}/connections/{row.id}", f"Not polled: {exc.detail}")
    return redirect(request, f"{PATH}/connections/{row.id}", accepted.detail.capitalize() + ".")


@router.post("/connections/{connection_id}/authorize")
def authorize_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    """To the provider's sign-in; it sends the browser back to ``/oauth/callback``, which
    links back here."""
    row = _row(session, connection_id)
    try:
        started = oauth_api.authorize_connection(row.id, session, res, user.role)
    except HTTPException as exc:
        return redirect(request, f"{PATH}/connections/{row.id}", f"Not started: {exc.detail}")
    return redirect(request, started.authorization_url)


@router.get("/connections/{connection_id}/delete")
def confirm_delete(
    request: Request,
    connection_id: uuid.UUID,
    user: UserDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    item = _shown(session, res, _row(session, connection_id))
    return render(request, res, "confirm_delete.html", user, item=item)


@router.post("/connections/{connection_id}/delete")
def delete_connection(
    request: Request,
    connection_id: uuid.UUID,
    user: AdminDep,
    session: SessionDep,
    res: ResourcesDep,
) -> Response:
    row = _row(session, connection_id)
    name = row.name
    connections.delete(session, res.settings, row)
    return redirect(request, f"{PATH}/connections", f"Connection {name} deleted.")
