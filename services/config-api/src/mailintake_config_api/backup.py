"""Backup and restore of the configuration: connections (with their OAuth2 grants and
certificate links), OAuth2 credentials and S/MIME certificates.

A backup is one JSON document. Secrets stay as they are stored, encrypted under
``MAILINTAKE_ENCRYPTION_KEYS`` and bound to their rows and destinations (base64 of the
ciphertext): a backup is as safe as the database it came from. Restore judges every row by
the API's schemas and rules, and needs each secret to decrypt for its row as restored, so a
file whose host (or TLS setting, or account) was edited is refused instead of sending a
password elsewhere. Restore upserts by id, so it is safe to run twice; ``parts`` selects
what is restored.
Restored connections are queued on the ``connections`` topic, so the scheduler learns them.
Mail, cursors and logs are not configuration: back up the database for those.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import TypeDecorator, delete, select
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from mailintake_config_api import connections
from mailintake_config_api.authorization import CredentialNameTakenError, credential_from_backup
from mailintake_config_api.certificates import CertificateError, read_upload
from mailintake_config_api.connections import NameTakenError
from mailintake_config_api.errors import InvalidInputError, field_errors
from mailintake_config_api.schemas import CertificateUpload
from mailintake_shared.db.bindings import (
    client_secret_binding,
    grant_binding,
    password_binding,
    private_key_binding,
)
from mailintake_shared.db.models import (
    Base,
    Certificate,
    Connection,
    ConnectionCertificate,
    OAuthCredential,
    OAuthGrant,
)
from mailintake_shared.oauth.tokens import AUTHORIZATION_REQUIRED, AUTHORIZED
from mailintake_shared.secretbox import (
    SecretBindingError,
    SecretBox,
    SecretDecryptError,
    is_unbound,
)
from mailintake_shared.settings import Settings

FORMAT = "mailintake-config-backup/1"
PARTS = ("credentials", "certificates", "connections")  # the order restore needs
_MODELS: dict[str, tuple[type[Base], ...]] = {
    "credentials": (OAuthCredential,),
    "certificates": (Certificate,),
    "connections": (Connection, OAuthGrant, ConnectionCertificate),
}


class BackupError(ValueError):
    """The document cannot be restored; the message says why."""


def _dump(row: Base) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        values[column.key] = value
    return values


def _load(model: type[Base], values: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = {}
    for column in model.__table__.columns:
        if column.key not in values:
            continue
        value = values[column.key]
        python_type = _python_type(column.type)
        if value is None:
            loaded[column.key] = None
        elif python_type is bytes:
            loaded[column.key] = base64.b64decode(value)
        elif python_type is uuid.UUID:
            loaded[column.key] = uuid.UUID(value)
        elif python_type is datetime:
            loaded[column.key] = datetime.fromisoformat(value)
        elif python_type is date:
            loaded[column.key] = date.fromisoformat(value)
        else:
            loaded[column.key] = value
    return loaded


def _python_type(column_type: TypeEngine[Any]) -> type:
    if isinstance(column_type, TypeDecorator):  # e.g. UTCDateTime over DateTime
        return _python_type(column_type.impl_instance)
    python_type: type = column_type.python_type
    return python_type


def backup(session: Session, parts: Iterable[str] = PARTS) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": FORMAT,
        "taken_at": datetime.now().astimezone().isoformat(),
    }
    for part in parts:
        document[part] = {
            model.__tablename__: [_dump(row) for row in session.scalars(select(model))]
            for model in _MODELS[part]
        }
    return document


@dataclass
class Restored:
    rows: dict[str, int] = field(default_factory=dict)
    connections_announced: int = 0


def restore(
    session: Session,
    settings: Settings,
    secrets: SecretBox,
    document: dict[str, Any],
    parts: Iterable[str] = PARTS,
    *,
    bind_unbound: bool = False,
) -> Restored:
    """Upsert the chosen parts, each row judged by the API's schemas and rules; every secret
    must decrypt with the configured keys *for its row as restored* (a destination edited in
    the file is refused). ``bind_unbound``: secrets of a backup taken before secrets were
    bound to their destinations are bound to the destinations the file names."""
    if document.get("format") != FORMAT:
        raise BackupError(f"not a {FORMAT} document")
    chosen = [p for p in PARTS if p in set(parts)]
    sealed = _Sealed(secrets, bind_unbound)
    done = Restored()
    for part in chosen:
        if part not in document:
            raise BackupError(f"the backup has no {part}")
        for model in _MODELS[part]:
            table = model.__tablename__
            try:
                rows = [_load(model, values) for values in document[part].get(table, [])]
            except (AttributeError, TypeError, ValueError) as exc:  # binascii.Error among them
                raise BackupError(f"{table}: a malformed value ({exc})") from None
            if model is ConnectionCertificate:  # a link set is replaced, not merged
                for cid in {row["connection_id"] for row in rows}:
                    session.execute(
                        delete(ConnectionCertificate).where(
                            ConnectionCertificate.connection_id == cid
                        )
                    )
                session.flush()
            for values in rows:
                where = f"{table} {values.get('id') or values.get('connection_id')}"
                try:
                    session.merge(_judged(session, settings, sealed, model, values))
                except ValidationError as exc:
                    rules = "; ".join(f"{e.field}: {e.rule}" for e in field_errors(exc.errors()))
                    raise BackupError(f"{where}: {rules}") from None
                except (InvalidInputError, _RefusedError) as exc:
                    raise BackupError(f"{where}: {exc}") from None
                except (NameTakenError, CredentialNameTakenError) as exc:
                    raise BackupError(f"{where}: another row is named {exc}") from None
                session.flush()
            done.rows[table] = len(rows)
    if "connections" in chosen:
        ids = {values["id"] for values in document["connections"].get("connections", [])}
        for row in session.scalars(
            select(Connection).where(Connection.id.in_([uuid.UUID(i) for i in ids]))
        ):
            connections.touch_and_announce(session, settings, row)
            done.connections_announced += 1
    return done


class _RefusedError(ValueError):
    """A row of the backup that the API would not have stored; the message says why."""


def _judged(
    session: Session, settings: Settings, sealed: _Sealed, model: type[Base], values: dict[str, Any]
) -> Base:
    """The row ``values`` describe, as the API would have stored it, with its secrets."""
    if model is OAuthCredential:
        credential = credential_from_backup(session, values)
        credential.client_secret_enc = sealed.check(
            "client_secret_enc", values.get("client_secret_enc"), client_secret_binding(credential)
        )
        return credential
    if model is Certificate:
        return _certificate(sealed, values)
    if model is Connection:
        row = connections.from_backup(session, settings, values)
        row.password_enc = sealed.check(
            "password_enc", values.get("password_enc"), password_binding(row)
        )
        return row
    if model is OAuthGrant:
        connection = session.get(Connection, values["connection_id"])
        if connection is None or not connection.view().protocol.is_oauth2:
            raise _RefusedError("a grant needs its OAuth2 connection (restore the connections too)")
        if values.get("status") not in (AUTHORIZED, AUTHORIZATION_REQUIRED):
            raise _RefusedError(f"status must be {AUTHORIZED} or {AUTHORIZATION_REQUIRED}")
        grant = OAuthGrant(**values)
        for column in ("refresh_token_enc", "access_token_enc"):
            token = sealed.check(column, values.get(column), grant_binding(connection))
            setattr(grant, column, token)
        return grant
    return model(**values)


def _certificate(sealed: _Sealed, values: dict[str, Any]) -> Certificate:
    """A certificate whose key belongs to it, named as an upload may be."""
    names = CertificateUpload.model_validate(
        {"name": values.get("name"), "alias": values.get("alias")}
    )
    row = Certificate(**values)
    key = sealed.check("private_key_enc", values.get("private_key_enc"), private_key_binding(row))
    if key is None:
        raise _RefusedError("private_key_enc: a certificate needs its private key")
    pem = sealed.plain("private_key_enc", key, private_key_binding(row))
    try:
        pair = read_upload(f"{values.get('certificate_pem', '')}\n{pem}", None, None)
    except CertificateError as exc:
        raise _RefusedError(f"certificate_pem: {exc}") from None
    if pair.fingerprint_sha256 != row.fingerprint_sha256:
        raise _RefusedError("fingerprint_sha256 is not the certificate's")
    row.name, row.alias = names.name.strip(), names.alias.strip() if names.alias else None
    row.certificate_pem, row.serial = pair.certificate_pem, f"{pair.certificate.serial_number:x}"
    row.private_key_enc = key
    return row


@dataclass(frozen=True)
class _Sealed:
    """The secrets of a backup, checked against the rows they are restored with."""

    box: SecretBox
    bind_unbound: bool

    def check(self, column: str, token: bytes | None, binding: bytes) -> bytes | None:
        """``token`` as it is to be stored: it must decrypt for ``binding``."""
        if token is None:
            return None
        if is_unbound(token):
            if not self.bind_unbound:
                raise _RefusedError(
                    f"its {column} was stored before secrets were bound to their destination "
                    "(a backup of an earlier version): restore it with --bind-unbound-secrets "
                    "if the file is unchanged since it was taken"
                )
            try:
                plain = self.box.open_unbound(token).get_secret_value()
            except SecretDecryptError:
                raise _RefusedError(self._no_key(column)) from None
            return self.box.encrypt(plain, binding)
        self.plain(column, token, binding)
        return token

    def plain(self, column: str, token: bytes, binding: bytes) -> str:
        try:
            return self.box.decrypt(token, binding).get_secret_value()
        except SecretBindingError:
            raise _RefusedError(
                f"its {column} does not belong to the row as the backup describes it (its "
                "destination or identity was changed after the backup was taken)"
            ) from None
        except SecretDecryptError:
            raise _RefusedError(self._no_key(column)) from None

    @staticmethod
    def _no_key(column: str) -> str:
        return (
            f"its {column} does not decrypt with MAILINTAKE_ENCRYPTION_KEYS (restore needs "
            "the key the backup's database used)"
        )
