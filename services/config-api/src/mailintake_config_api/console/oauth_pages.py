"""OAuth2 client credentials: the apps registered with Google and Microsoft that OAuth2
connections sign in through (list, add, delete). The client secret is write-only."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_config_api import authorization
from mailintake_config_api.console.forms import InvalidFormError, parsed
from mailintake_config_api.console.session import PATH
from mailintake_config_api.console.web import AdminDep, FormDep, UserDep, redirect, render
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.resources import Resources
from mailintake_config_api.routes import oauth as api
from mailintake_config_api.schemas import OAuthCredentialCreate
from mailintake_shared.db.models import Connection, OAuthCredential

router = APIRouter(prefix=PATH, include_in_schema=False)
FIELDS = ("name", "provider", "client_id", "tenant", "scopes", "app_only")


def _page(
    request: Request,
    user: object,
    session: Session,
    res: Resources,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> Response:
    credentials = list(session.scalars(select(OAuthCredential).order_by(OAuthCredential.name)))
    users: dict[uuid.UUID, list[str]] = {}
    for credential_id, name in session.execute(
        select(Connection.oauth_credential_id, Connection.name).where(
            Connection.oauth_credential_id.is_not(None)
        )
    ).all():
        if credential_id is not None:
            users.setdefault(credential_id, []).append(name)
    return render(
        request,
        res,
        "credentials.html",
        user,  # type: ignore[arg-type]
        status,
        credentials=[authorization.credential_public(c) for c in credentials],
        users=users,
        values=values or {"provider": "microsoft"},
        errors=errors or {},
        redirect_uri=res.settings.oauth_redirect_uri,
    )


@router.get("/oauth-credentials")
def credentials_page(
    request: Request, user: UserDep, session: SessionDep, res: ResourcesDep
) -> Response:
    return _page(request, user, session, res)


@router.post("/oauth-credentials")
def create_credential(
    request: Request, user: AdminDep, session: SessionDep, res: ResourcesDep, fields: FormDep
) -> Response:
    values = {k: fields.get(k, "").strip() for k in FIELDS}
    body: dict[str, object] = {
        k: v for k, v in values.items() if v and k not in ("scopes", "app_only")
    }
    if values["scopes"]:
        body["scopes"] = values["scopes"].split()
    body["app_only"] = bool(values["app_only"])
    body["client_secret"] = fields.get("client_secret", "")
    errors: dict[str, list[str]] = {}
    try:
        authorization.create_credential(session, res, parsed(OAuthCredentialCreate, body))
    except InvalidFormError as exc:
        for error in exc.errors:
            errors.setdefault(error.field.split(".")[0], []).append(error.rule)
    except authorization.CredentialNameTakenError:
        errors["name"] = [f"an OAuth2 credential named {values['name']} already exists"]
    if errors:
        return _page(request, user, session, res, 422, values, errors)
    return redirect(request, f"{PATH}/oauth-credentials", f"Credential {values['name']} stored.")


@router.post("/oauth-credentials/{credential_id}/delete")
def delete_credential(
    request: Request, credential_id: uuid.UUID, user: AdminDep, session: SessionDep
) -> Response:
    api.delete_credential(credential_id, session, user.role)
    return redirect(request, f"{PATH}/oauth-credentials", "Credential deleted.")
