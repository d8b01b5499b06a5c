"""OAuth2 client credentials, and authorizing a connection: the authorization URL (code flow
with PKCE, a state bound to the connection, single-use and short-lived) and the callback
that exchanges the code and keeps the grant encrypted."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailintake_config_api import connections
from mailintake_config_api.errors import InvalidInputError
from mailintake_config_api.resources import Resources
from mailintake_config_api.schemas import (
    AuthorizationStarted,
    FieldError,
    OAuthCredentialCreate,
    OAuthCredentialFields,
    OAuthCredentialPublic,
    OAuthCredentialUpdate,
    control_character,
)
from mailintake_shared.db.bindings import client_secret_binding, flow_binding
from mailintake_shared.db.dialect import lower
from mailintake_shared.db.models import Connection, OAuthCredential, OAuthFlow
from mailintake_shared.db.types import utcnow
from mailintake_shared.logging import get_logger
from mailintake_shared.oauth.providers import InvalidGrantError, ProviderError
from mailintake_shared.oauth.tokens import registration, save_grant

log = get_logger(__name__)


class CredentialInUseError(Exception):
    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class CredentialNameTakenError(Exception):
    pass


class NotOAuthError(Exception):
    """The connection signs in with a password, or its credential is app-only: nothing to
    authorize."""


class CallbackError(Exception):
    """The callback cannot complete (unknown or expired state, the provider refused)."""


# --- credentials ---------------------------------------------------------------------------
def credential_public(row: OAuthCredential) -> OAuthCredentialPublic:
    return OAuthCredentialPublic(
        id=row.id,
        name=row.name,
        provider=row.provider,
        client_id=row.client_id,
        tenant=row.tenant,
        scopes=row.scopes.split() if row.scopes else None,
        app_only=row.app_only,
        has_client_secret=row.client_secret_enc is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _name_free(session: Session, name: str, own: uuid.UUID | None) -> None:
    clash = session.scalar(
        select(OAuthCredential.id).where(lower(session, OAuthCredential.name) == name.lower())
    )
    if clash is not None and clash != own:
        raise CredentialNameTakenError(name)


def create_credential(
    session: Session, res: Resources, body: OAuthCredentialCreate
) -> OAuthCredential:
    _name_free(session, body.name, None)
    now = utcnow()
    row = _credential_row(body, uuid.uuid4(), now, now)
    secret = body.client_secret.get_secret_value()
    row.client_secret_enc = res.secrets.encrypt(secret, client_secret_binding(row))
    session.add(row)
    session.flush()
    return row


def credential_from_backup(session: Session, values: dict[str, Any]) -> OAuthCredential:
    """The credential a backup's row describes, judged by the schema a create is; its secret
    is the caller's to check. Raises pydantic's ``ValidationError`` or
    ``CredentialNameTakenError``."""
    scopes = values.get("scopes")
    fields = OAuthCredentialFields.model_validate(
        {
            "name": values.get("name"),
            "provider": values.get("provider"),
            "client_id": values.get("client_id"),
            "tenant": values.get("tenant"),
            "scopes": scopes.split() if scopes else None,
            "app_only": bool(values.get("app_only")),
        }
    )
    _name_free(session, fields.name, values["id"])
    created, updated = values.get("created_at"), values.get("updated_at")
    return _credential_row(fields, values["id"], created or utcnow(), updated or utcnow())


def _credential_row(
    fields: OAuthCredentialFields, row_id: uuid.UUID, created_at: datetime, updated_at: datetime
) -> OAuthCredential:
    return OAuthCredential(
        id=row_id,
        name=fields.name,
        provider=fields.provider.value,
        client_id=fields.client_id,
        tenant=fields.tenant,
        scopes=" ".join(fields.scopes) if fields.scopes else None,
        app_only=fields.app_only,
        created_at=created_at,
        updated_at=updated_at,
    )


def update_credential(
    session: Session, res: Resources, row: OAuthCredential, body: OAuthCredentialUpdate
) -> OAuthCredential:
    changes = body.model_dump(exclude_unset=True)
    if "tenant" in changes and body.tenant != row.tenant and body.client_secret is None:
        raise InvalidInputError(
            [
                FieldError(
                    field="client_secret",
                    rule="client_secret is required again because tenant changed: a stored "
                    "secret goes only to the token endpoint it was given for",
                )
            ]
        )
    if "name" in changes:
        _name_free(session, body.name or "", row.id)
        row.name = body.name or row.name
    if "client_id" in changes and body.client_id:
        row.client_id = body.client_id
    if "tenant" in changes:
        row.tenant = body.tenant
    if "client_secret" in changes and body.client_secret is not None:
        secret = body.client_secret.get_secret_value()
        row.client_secret_enc = res.secrets.encrypt(secret, client_secret_binding(row))
    if "scopes" in changes:
        row.scopes = " ".join(body.scopes) if body.scopes else None
    row.updated_at = utcnow()
    return row


def delete_credential(session: Session, row: OAuthCredential) -> None:
    users = session.scalars(
        select(Connection.name).where(Connection.oauth_credential_id == row.id)
    ).all()
    if users:
        raise CredentialInUseError(sorted(users))
    session.delete(row)


# --- authorizing a connection --------------------------------------------------------------
def _registration_of(session: Session, res: Resources, row: Connection) -> Any:
    if not row.view().protocol.is_oauth2 or row.oauth_credential_id is None:
        raise NotOAuthError()
    credential = session.get(OAuthCredential, row.oauth_credential_id)
    assert credential is not None  # the foreign key
    if credential.app_only:
        raise NotOAuthError()
    return registration(row, credential, res.secrets)


def start(session: Session, res: Resources, row: Connection) -> AuthorizationStarted:
    reg = _registration_of(session, res, row)
    state = secrets.token_urlsafe(32)
    url, flow = res.tokens.provider(reg.provider).start(reg, state, login_hint=row.username)
    expires_at = utcnow() + timedelta(seconds=res.settings.oauth_state_seconds)
    session.execute(delete(OAuthFlow).where(OAuthFlow.expires_at < utcnow()))
    flow_row = OAuthFlow(state=state, connection_id=row.id, expires_at=expires_at)
    flow_row.flow_enc = res.secrets.encrypt(json.dumps(flow), flow_binding(flow_row))
    session.add(flow_row)
    log.info("authorization started", connection_id=str(row.id))
    return AuthorizationStarted(authorization_url=url, expires_at=expires_at)


def finish(session: Session, res: Resources, response: dict[str, str]) -> Connection:
    """The provider sent the browser back: exchange the code, keep the grant."""
    state = response.get("state", "")
    known = len(state) <= 128 and control_character(state) is None  # no NUL to the database
    flow_row = session.get(OAuthFlow, state, with_for_update=True) if known else None
    if flow_row is None or flow_row.expires_at < utcnow():
        raise CallbackError("this authorization link is unknown or has expired; start again")
    session.delete(flow_row)  # single use, whatever happens next
    row = session.get(Connection, flow_row.connection_id)
    if row is None:
        raise CallbackError("the connection no longer exists")
    reg = _registration_of(session, res, row)
    flow = json.loads(
        res.secrets.decrypt(flow_row.flow_enc, flow_binding(flow_row)).get_secret_value()
    )
    try:
        tokens = res.tokens.provider(reg.provider).finish(reg, flow, response)
    except (InvalidGrantError, ProviderError) as exc:
        raise CallbackError(f"the provider did not authorize the connection: {exc}") from exc
    save_grant(
        session, res.secrets, row, tokens.access_token, tokens.refresh_token, tokens.expires_at
    )
    res.tokens.forget(row.id)
    connections.touch_and_announce(session, res.settings, row)  # a parked schedule resumes
    log.info("connection authorized", connection_id=str(row.id))
    return row
