"""``/oauth-credentials`` (the apps registered with Google and Microsoft),
``/connections/{id}/authorize`` and ``/oauth/callback`` (where the provider sends the browser
back)."""

from __future__ import annotations

import html
import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse

from mailintake_config_api import authorization
from mailintake_config_api.auth import Admin, Viewer
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.schemas import (
    AuthorizationStarted,
    ErrorBody,
    OAuthCredentialCreate,
    OAuthCredentialPublic,
    OAuthCredentialUpdate,
    Page,
)
from mailintake_shared.db.models import Connection, OAuthCredential
from mailintake_shared.logging import get_logger
from mailintake_shared.oauth.providers import ProviderError
from mailintake_shared.secretbox import SecretDecryptError

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}
router = APIRouter(responses=ERRORS)
log = get_logger(__name__)


def _credential(session: SessionDep, credential_id: uuid.UUID) -> OAuthCredential:
    row = session.get(OAuthCredential, credential_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no OAuth2 credential with this id")
    return row


def _taken(name: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT, detail=f"an OAuth2 credential named {name} already exists"
    )


@router.get(
    "/oauth-credentials",
    response_model=Page[OAuthCredentialPublic],
    tags=["oauth"],
    summary="List OAuth2 credentials",
)
def list_credentials(session: SessionDep, _role: Viewer) -> Page[OAuthCredentialPublic]:
    rows = session.query(OAuthCredential).order_by(OAuthCredential.name).all()
    items = [authorization.credential_public(r) for r in rows]
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post(
    "/oauth-credentials",
    response_model=OAuthCredentialPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["oauth"],
    summary="Store an OAuth2 credential (client id and secret)",
)
def create_credential(
    body: OAuthCredentialCreate, session: SessionDep, res: ResourcesDep, _role: Admin
) -> OAuthCredentialPublic:
    try:
        row = authorization.create_credential(session, res, body)
    except authorization.CredentialNameTakenError:
        raise _taken(body.name) from None
    return authorization.credential_public(row)


@router.get(
    "/oauth-credentials/{credential_id}",
    response_model=OAuthCredentialPublic,
    tags=["oauth"],
    summary="Show an OAuth2 credential",
)
def get_credential(
    credential_id: uuid.UUID, session: SessionDep, _role: Viewer
) -> OAuthCredentialPublic:
    return authorization.credential_public(_credential(session, credential_id))


@router.patch(
    "/oauth-credentials/{credential_id}",
    response_model=OAuthCredentialPublic,
    tags=["oauth"],
    summary="Update an OAuth2 credential",
)
def update_credential(
    credential_id: uuid.UUID,
    body: OAuthCredentialUpdate,
    session: SessionDep,
    res: ResourcesDep,
    _role: Admin,
) -> OAuthCredentialPublic:
    row = _credential(session, credential_id)
    try:
        authorization.update_credential(session, res, row, body)
    except authorization.CredentialNameTakenError:
        raise _taken(body.name or "") from None
    return authorization.credential_public(row)


@router.delete(
    "/oauth-credentials/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["oauth"],
    summary="Delete an OAuth2 credential no connection uses",
)
def delete_credential(credential_id: uuid.UUID, session: SessionDep, _role: Admin) -> Response:
    try:
        authorization.delete_credential(session, _credential(session, credential_id))
    except authorization.CredentialInUseError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"the credential is used by connections: {', '.join(exc.names)}",
        ) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/connections/{connection_id}/authorize",
    response_model=AuthorizationStarted,
    tags=["oauth"],
    summary="Start authorizing an OAuth2 connection",
    responses={502: {"model": ErrorBody, "description": "The identity provider did not answer."}},
)
def authorize_connection(
    connection_id: uuid.UUID, session: SessionDep, res: ResourcesDep, _role: Admin
) -> AuthorizationStarted:
    """Returns the provider's sign-in URL (code flow with PKCE). Open it in a browser, sign in
    as the mailbox's account and consent; the provider then sends the browser to
    `/oauth/callback`, which stores the grant."""
    row = session.get(Connection, connection_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no connection with this id")
    try:
        return authorization.start(session, res, row)
    except authorization.NotOAuthError:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="nothing to authorize: the connection signs in with a password, or its "
            "credential is app-only",
        ) from None
    except SecretDecryptError:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="the credential's client secret does not belong to it as it is now (changed "
            "outside the API): send the client secret again",
        ) from None
    except ProviderError as exc:
        provider = row.view().protocol.value.removesuffix("_oauth2")
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            detail=f"the identity provider ({provider}) could not start the authorization: {exc}",
        ) from None


_PAGE = "<!doctype html><title>mailintake</title><p>{}</p>"


@router.get(
    "/oauth/callback",
    response_class=HTMLResponse,
    tags=["oauth"],
    summary="Where the provider sends the browser back",
    responses={
        429: {
            "description": "Too many refused callbacks from this address in a minute "
            "(MAILINTAKE_API_AUTH_FAILURES_PER_MINUTE counts them with failed tokens)."
        }
    },
)
def oauth_callback(request: Request, session: SessionDep, res: ResourcesDep) -> HTMLResponse:
    """No bearer token: the single-use state in the query is bound to one connection."""
    try:
        row = authorization.finish(session, res, dict(request.query_params))
    except authorization.CallbackError as exc:
        # As a wrong bearer token: in the log, not the audit log, and slowed past the limit.
        address = request.client.host if request.client else "unknown"
        log.warning("authorization callback refused", client=address, reason=str(exc))
        code = status.HTTP_400_BAD_REQUEST
        if request.app.state.auth_failures.failed(address) is not None:
            code = status.HTTP_429_TOO_MANY_REQUESTS
        return HTMLResponse(_PAGE.format(html.escape(str(exc))), code)
    text = f"The connection {row.name} is authorized. You can close this window."
    page = _PAGE.format(html.escape(text))
    if res.settings.console_enabled:  # back to the connection's page in the console
        back = f"/console/connections/{row.id}"
        page = page.replace("<p>", f'<meta http-equiv="refresh" content="0; url={back}"><p>', 1)
        page += f'<p><a href="{back}">Back to the connection</a></p>'
    return HTMLResponse(page)
