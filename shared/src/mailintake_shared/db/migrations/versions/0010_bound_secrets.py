"""Bind every stored secret to its row and destination (AES-256-GCM, associated data)

Secrets stored before were Fernet tokens that decrypted anywhere: a password kept working
after its connection's host was edited outside the API. This re-encrypts each one, bound as
``mailintake_shared.db.bindings`` says, so it needs ``MAILINTAKE_ENCRYPTION_KEYS`` when
there are secrets to bind. The rows are read with the columns they have at this revision
(reflected), not through the models of later revisions.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import warnings
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from mailintake_shared.db.bindings import binding_of
from mailintake_shared.db.models import (
    Base,
    Certificate,
    Connection,
    OAuthCredential,
    OAuthFlow,
    OAuthGrant,
)
from mailintake_shared.secretbox import SecretBox, is_unbound

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Connections first: a grant is bound with its connection.
SECRETS: tuple[tuple[type[Base], tuple[str, ...]], ...] = (
    (Connection, ("password_enc",)),
    (OAuthGrant, ("refresh_token_enc", "access_token_enc")),
    (OAuthCredential, ("client_secret_enc",)),
    (OAuthFlow, ("flow_enc",)),
    (Certificate, ("private_key_enc",)),
)


def upgrade() -> None:
    bind = op.get_bind()
    box: SecretBox | None = context.config.attributes.get("secrets")
    connections: dict[Any, Connection] = {}  # transient copies: what bindings read
    for model, columns in SECRETS:
        with warnings.catch_warnings():
            # SQLite cannot reflect the lower(name) indexes; only the columns are read here.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
            table = sa.Table(model.__tablename__, sa.MetaData(), autoload_with=bind)
        known = set(model.__table__.columns.keys())
        keys = [c.name for c in table.primary_key.columns]
        for found in bind.execute(sa.select(table)).mappings().all():
            row = model(**{k: v for k, v in found.items() if k in known})
            for column in model.__table__.columns:  # added by a later revision: its default
                default = column.default
                if column.key not in found and default is not None and default.is_scalar:
                    setattr(row, column.key, default.arg)
            if isinstance(row, Connection):
                connections[row.id] = row
            unbound = {
                c: found[c] for c in columns if found[c] is not None and is_unbound(found[c])
            }
            if not unbound:
                continue
            if box is None:
                raise RuntimeError(
                    "the database holds secrets to bind to their destinations: run the "
                    "migration with MAILINTAKE_ENCRYPTION_KEYS set (mailintake-migrate)"
                )
            binding = binding_of(row, connections.get)
            bound = {
                c: box.encrypt(box.open_unbound(v).get_secret_value(), binding)
                for c, v in unbound.items()
            }
            where = sa.and_(*(table.c[k] == found[k] for k in keys))
            bind.execute(table.update().where(where).values(**bound))


def downgrade() -> None:
    raise NotImplementedError(
        "bound secrets are not unbound: restore the database backup taken before the upgrade"
    )
