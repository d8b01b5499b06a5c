"""Reads of a mailbox's state that the fetcher (polls) and the config API (the estimate
before enabling) share."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from mailintake_shared.db.bindings import grant_binding, password_binding
from mailintake_shared.db.models import Connection, FailedMessage, MailboxState, Message
from mailintake_shared.domain import Transport
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.mailbox.selection import Cursor
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox, SecretDecryptError

log = get_logger(__name__)


def mailbox_config(
    row: Connection,
    secrets: SecretBox,
    tokens: TokenStore | None = None,
    network: NetworkPolicy | None = None,
) -> MailboxConfig:
    """The connection's view, and its decrypted password or its source of access tokens;
    ``network`` says which addresses it may reach (the built-in denials when None).

    A stored password that does not decrypt for the connection as it is now (its destination
    changed outside the API, or the key is gone) is left out: the login then fails, and the
    password goes nowhere else."""
    password = None
    if row.password_enc:
        try:
            password = secrets.decrypt(row.password_enc, password_binding(row))
        except SecretDecryptError as exc:
            log.error("stored password not usable", connection_id=str(row.id), reason=str(exc))
    view = row.view()
    network = network or NetworkPolicy()
    if not view.protocol.is_oauth2 or tokens is None:
        return MailboxConfig(view=view, password=password, network=network)
    connection_id, binding = row.id, grant_binding(row)
    return MailboxConfig(
        view=view,
        password=None,
        access_token=lambda refresh: tokens.access_token(
            connection_id, refresh=refresh, binding=binding
        ),
        graph=tokens.graph if view.transport is Transport.GRAPH else None,
        network=network,
    )


def cursor_of(session: Session, connection_id: uuid.UUID, folder: str) -> Cursor | None:
    state = session.get(MailboxState, (connection_id, folder))
    if state is None:
        return None
    return Cursor(state.uidvalidity, state.last_uid, state.baseline_uid, state.delta_link)


def known_server_ids(
    session: Session, connection_id: uuid.UUID, folder: str, among: Collection[str] | None = None
) -> set[str]:
    """Server ids already stored, or waiting in the Incoming Mail Queue as failed (only those
    of ``among`` when it is given)."""
    stored = select(Message.server_id).where(
        Message.connection_id == connection_id, Message.folder == folder
    )
    failed = select(FailedMessage.server_id).where(
        FailedMessage.connection_id == connection_id, FailedMessage.folder == folder
    )
    if among is not None:
        if not among:
            return set()
        stored = stored.where(Message.server_id.in_(among))
        failed = failed.where(FailedMessage.server_id.in_(among))
    return set(session.scalars(union(stored, failed)))
