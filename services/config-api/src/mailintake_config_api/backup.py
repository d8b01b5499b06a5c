"""Backup and restore of the configuration: connections (with their OAuth2 grants and
certificate links), OAuth2 credentials and S/MIME certificates.

A backup is one JSON document. Secrets stay as they are stored, encrypted under
``MAILINTAKE_ENCRYPTION_KEYS`` (base64 of the ciphertext): a backup is as safe as the
database it came from, and restoring it needs a key that decrypts them (restore checks).
Restore upserts by id, so it is safe to run twice; ``parts`` selects what is restored.
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

from sqlalchemy import TypeDecorator, delete, select
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from mailintake_config_api import connections
from mailintake_shared.db.models import (
    Base,
    Certificate,
    Connection,
    ConnectionCertificate,
    OAuthCredential,
    OAuthGrant,
)
from mailintake_shared.secretbox import SecretBox, SecretDecryptError
from mailintake_shared.settings import Settings

FORMAT = "mailintake-config-backup/1"
PARTS = ("credentials", "certificates", "connections")  # the order restore needs
_MODELS: dict[str, tuple[type[Base], ...]] = {
    "credentials": (OAuthCredential,),
    "certificates": (Certificate,),
    "connections": (Connection, OAuthGrant, ConnectionCertificate),
}
_SECRET_COLUMNS = {
    "password_enc",
    "client_secret_enc",
    "refresh_token_enc",
    "access_token_enc",
    "private_key_enc",
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
) -> Restored:
    """Upsert the chosen parts; every secret must decrypt with the configured keys."""
    if document.get("format") != FORMAT:
        raise BackupError(f"not a {FORMAT} document")
    chosen = [p for p in PARTS if p in set(parts)]
    done = Restored()
    for part in chosen:
        if part not in document:
            raise BackupError(f"the backup has no {part}")
        for model in _MODELS[part]:
            rows = [_load(model, values) for values in document[part].get(model.__tablename__, [])]
            _check_secrets(secrets, model.__tablename__, rows)
            if model is ConnectionCertificate:  # a link set is replaced, not merged
                for cid in {row["connection_id"] for row in rows}:
                    session.execute(
                        delete(ConnectionCertificate).where(
                            ConnectionCertificate.connection_id == cid
                        )
                    )
                session.flush()
            for values in rows:
                session.merge(model(**values))
            session.flush()
            done.rows[model.__tablename__] = len(rows)
    if "connections" in chosen:
        ids = {values["id"] for values in document["connections"].get("connections", [])}
        for row in session.scalars(
            select(Connection).where(Connection.id.in_([uuid.UUID(i) for i in ids]))
        ):
            connections.touch_and_announce(session, settings, row)
            done.connections_announced += 1
    return done


def _check_secrets(secrets: SecretBox, table: str, rows: list[dict[str, Any]]) -> None:
    for values in rows:
        for column in _SECRET_COLUMNS & values.keys():
            if values[column] is None:
                continue
            try:
                secrets.decrypt(values[column])
            except SecretDecryptError as exc:
                raise BackupError(
                    f"{table} {values.get('id') or values.get('connection_id')}: its {column} "
                    "does not decrypt with MAILINTAKE_ENCRYPTION_KEYS (restore needs the key "
                    "the backup's database used)"
                ) from exc
