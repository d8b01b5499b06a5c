"""``/graph/notifications``: where Microsoft Graph posts change and lifecycle notifications
(no bearer token: each notification is checked by its subscription's ``clientState``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.responses import PlainTextResponse

from mailintake_config_api import graph_notifications
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.errors import InvalidInputError
from mailintake_config_api.graph_notifications import ChangeNotificationCollection
from mailintake_config_api.schemas import ErrorBody, FieldError

router = APIRouter(tags=["graph"])


@router.post(
    "/graph/notifications",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Microsoft Graph change notifications",
    responses={
        200: {
            "description": "The validation handshake: the `validationToken` echoed.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        202: {"description": "Taken: the polls asked for are durable."},
        403: {"model": ErrorBody, "description": "Every notification had a wrong clientState."},
        422: {"model": ErrorBody},
    },
)
def notifications(
    session: SessionDep,
    res: ResourcesDep,
    validation_token: Annotated[
        str | None,
        Query(
            alias="validationToken",
            max_length=1024,
            description="Sent by Graph when a subscription is created: echoed as text.",
        ),
    ] = None,
    collection: Annotated[ChangeNotificationCollection | None, Body()] = None,
) -> Response:
    """The notification URL of ``MAILINTAKE_GRAPH_NOTIFICATION_URL`` (it also receives the
    lifecycle notifications). With `validationToken` (a new subscription): the token as
    plain text. Otherwise a `changeNotificationCollection`: a poll of each connection whose
    mailbox changed, through the outbox; notifications of unknown subscriptions are ignored,
    and ones with the wrong `clientState` never trusted (403 when nothing else came)."""
    if validation_token is not None:
        return PlainTextResponse(validation_token)
    if collection is None:
        raise InvalidInputError(
            [FieldError(field="value", rule="a change-notification collection is required")]
        )
    received = graph_notifications.receive(session, res.settings, collection)
    if received.only_forged:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="clientState does not match")
    return Response(status_code=status.HTTP_202_ACCEPTED)
