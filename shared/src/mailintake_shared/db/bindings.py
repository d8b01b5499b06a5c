"""What each stored secret is bound to: the associated data of its encryption (``secretbox``).

A secret goes only where it was given for. A connection's password and its OAuth2 grant are
bound to the connection's id and its *destination* — everything that decides which server
receives them, as which account, and whom TLS trusts there; a client secret to its
credential's id, provider and tenant (which token endpoint it goes to); a private key to
its certificate; an authorization under way to its state and connection. The API asks for
a secret again when its binding changes (``destination_changes``); a binding changed any
other way makes the secret undecryptable.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from mailintake_shared.db.models import (
    Base,
    Certificate,
    Connection,
    OAuthCredential,
    OAuthFlow,
    OAuthGrant,
)
from mailintake_shared.domain import ConnectionView

# The attributes of a connection that decide where its secrets go, in the API's names.
DESTINATION_FIELDS = (
    "protocol",
    "transport",
    "oauth_credential_id",
    "host",
    "encryption",
    "port",
    "tls_verify",
    "tls_ca_pem",
    "username",
    "shared_mailbox",
)


def _context(kind: str, **values: Any) -> bytes:
    return json.dumps({"kind": kind, **values}, sort_keys=True, separators=(",", ":")).encode()


def destination(view: ConnectionView) -> dict[str, Any]:
    """Where a connection's secrets go, defaults applied (a blank port and the protocol's
    default port are one destination); the CA certificates by their SHA-256."""
    values: dict[str, Any] = view.model_dump(mode="json", include=set(DESTINATION_FIELDS))
    if view.tls_ca_pem is not None:
        values["tls_ca_pem"] = hashlib.sha256(view.tls_ca_pem.encode()).hexdigest()
    return values


def destination_changes(before: ConnectionView, after: ConnectionView) -> list[str]:
    """The fields whose change sends the connection's secrets somewhere else."""
    old, new = destination(before), destination(after)
    return [name for name in DESTINATION_FIELDS if old[name] != new[name]]


def password_binding(row: Connection) -> bytes:
    return _context("connection.password", id=str(row.id), **destination(row.view()))


def grant_binding(row: Connection) -> bytes:
    return _context("connection.oauth_grant", id=str(row.id), **destination(row.view()))


def client_secret_binding(row: OAuthCredential) -> bytes:
    return _context(
        "oauth_credential.client_secret", id=str(row.id), provider=row.provider, tenant=row.tenant
    )


def flow_binding(row: OAuthFlow) -> bytes:
    return _context("oauth_flow", state=row.state, connection_id=str(row.connection_id))


def private_key_binding(row: Certificate) -> bytes:
    return _context("certificate.private_key", id=str(row.id), sha256=row.fingerprint_sha256)


def binding_of(row: Base, connection_of: Callable[[uuid.UUID], Connection | None]) -> bytes:
    """The binding of ``row``'s secret columns; a grant's is its connection's, found by
    ``connection_of``."""
    if isinstance(row, Connection):
        return password_binding(row)
    if isinstance(row, OAuthGrant):
        connection = connection_of(row.connection_id)
        if connection is None:
            raise LookupError(f"the grant's connection {row.connection_id} does not exist")
        return grant_binding(connection)
    if isinstance(row, OAuthCredential):
        return client_secret_binding(row)
    if isinstance(row, OAuthFlow):
        return flow_binding(row)
    if isinstance(row, Certificate):
        return private_key_binding(row)
    raise TypeError(f"{type(row).__name__} holds no secret")
