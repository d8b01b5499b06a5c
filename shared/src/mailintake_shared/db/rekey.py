"""Re-encrypt every stored secret with the first encryption key: ``mailintake-rotate-secrets``.

Rotation: put a new key in front of ``MAILINTAKE_ENCRYPTION_KEYS`` (``new,old``), roll the
services out (new secrets use the new key, old ones still decrypt), run this once, then drop
the old key. It is safe to run again, and to run while the services work: each row is
rewritten in its own short transaction, under a row lock, bound as it was (``bindings``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from mailintake_shared.db.bindings import binding_of
from mailintake_shared.db.models import (
    Base,
    Certificate,
    Connection,
    OAuthCredential,
    OAuthFlow,
    OAuthGrant,
)
from mailintake_shared.secretbox import SecretBox

# Every encrypted column: (model, its key column, its secret columns).
ENCRYPTED: tuple[tuple[type[Base], InstrumentedAttribute[object], tuple[str, ...]], ...] = (
    (Connection, Connection.id, ("password_enc",)),
    (OAuthCredential, OAuthCredential.id, ("client_secret_enc",)),
    (OAuthGrant, OAuthGrant.connection_id, ("refresh_token_enc", "access_token_enc")),
    (OAuthFlow, OAuthFlow.state, ("flow_enc",)),
    (Certificate, Certificate.id, ("private_key_enc",)),
)


@dataclass
class Rekeyed:
    rows: int = 0
    secrets: int = 0


def rekey(sessions: sessionmaker[Session], box: SecretBox) -> dict[str, Rekeyed]:
    """Rewrite every secret with the current key; counts per table."""
    counts: dict[str, Rekeyed] = {}
    for model, key, columns in ENCRYPTED:
        done = counts.setdefault(model.__tablename__, Rekeyed())
        with sessions() as session:
            ids = list(session.scalars(select(key)))
        for row_id in ids:
            with sessions() as session, session.begin():
                row = session.get(model, row_id, with_for_update=True)
                if row is None:
                    continue  # deleted meanwhile
                done.rows += 1
                binding = binding_of(row, lambda cid: session.get(Connection, cid))
                for column in columns:
                    value = getattr(row, column)
                    if value is not None:
                        setattr(row, column, box.rotate(bytes(value), binding))
                        done.secrets += 1
    return counts


def main() -> None:
    from mailintake_shared.db.engine import make_engine, make_session_factory
    from mailintake_shared.logging import configure_logging, get_logger
    from mailintake_shared.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, service="rotate-secrets")
    engine = make_engine(settings)
    counts = rekey(make_session_factory(engine), SecretBox(settings.encryption_keys))
    for table, done in counts.items():
        get_logger(__name__).info(
            "secrets re-encrypted with the first key",
            table=table,
            rows=done.rows,
            secrets=done.secrets,
        )
    engine.dispose()
