"""Connection rows ↔ API bodies ↔ topic events, and the writes that keep them in step."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailintake_config_api import rules
from mailintake_config_api.errors import InvalidInputError
from mailintake_config_api.lookups import like_pattern
from mailintake_config_api.schemas import (
    ConnectionCreate,
    ConnectionHealth,
    ConnectionPublic,
    ConnectionUpdate,
    FieldError,
    WatchStatus,
)
from mailintake_shared.db.bindings import destination_changes, password_binding
from mailintake_shared.db.dialect import lower
from mailintake_shared.db.models import (
    Connection,
    ConnectionStatus,
    ConnectionWatch,
    OAuthCredential,
    OAuthGrant,
    PollLease,
)
from mailintake_shared.db.types import utcnow
from mailintake_shared.domain import (
    DEFAULT_TIMEOUT_MS,
    ConnectionView,
    Encryption,
    Protocol,
    PushMode,
    Transport,
    transport_for,
)
from mailintake_shared.events import ConnectionState, PollReason, PollRequested, StoreWaiting
from mailintake_shared.outbox import add_to_outbox
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from mailintake_shared.watch import STALE_AFTER_HEARTBEATS, WatchMethod, WatchState

_DRAFT_FIELDS = tuple(name for name in rules.ConnectionDraft.model_fields if name != "has_password")


class Sort(StrEnum):
    """Orders of the connection list: a column, ascending; ``-`` before it, descending."""

    NAME = "name"
    NAME_DESC = "-name"
    PROTOCOL = "protocol"
    PROTOCOL_DESC = "-protocol"
    HOST = "host"
    HOST_DESC = "-host"
    USERNAME = "username"
    USERNAME_DESC = "-username"
    ENABLED = "enabled"
    ENABLED_DESC = "-enabled"
    LAST_POLL = "last_poll"
    LAST_POLL_DESC = "-last_poll"
    LAST_SUCCESS = "last_success"
    LAST_SUCCESS_DESC = "-last_success"
    MESSAGES = "messages"
    MESSAGES_DESC = "-messages"
    FAILURES = "failures"
    FAILURES_DESC = "-failures"


_SORT_COLUMNS: dict[str, Any] = {
    "name": func.lower(Connection.name),
    "protocol": Connection.protocol,
    "host": func.lower(Connection.host),
    "username": func.lower(Connection.username),
    "enabled": Connection.enabled,
    "last_poll": ConnectionStatus.last_poll_at,
    "last_success": ConnectionStatus.last_success_at,
    "messages": ConnectionStatus.messages_stored,
    "failures": ConnectionStatus.consecutive_failures,
}


def search(
    session: Session, term: str | None, sort: Sort, limit: int, offset: int
) -> tuple[list[Connection], int]:
    """A page of the connections whose name, description, host or username contains ``term``
    (case-insensitive), in ``sort``'s order (then by name and id), and how many match."""
    query = select(Connection)
    if term and term.strip():
        pattern = like_pattern(term)
        columns = (Connection.name, Connection.description, Connection.host, Connection.username)
        query = query.where(or_(*(lower(session, c).like(pattern, escape="\\") for c in columns)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    column = _SORT_COLUMNS[sort.value.removeprefix("-")]
    order = column.desc() if sort.value.startswith("-") else column.asc()
    rows = session.scalars(
        query.outerjoin(ConnectionStatus, ConnectionStatus.connection_id == Connection.id)
        .order_by(order.nulls_last(), func.lower(Connection.name), Connection.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


class NameTakenError(Exception):
    """Another connection already has this name (compared case-insensitively)."""


def to_public(
    row: Connection,
    status: ConnectionStatus | None = None,
    grant: str | None = None,
    watch: tuple[ConnectionWatch | None, datetime] | None = None,
) -> ConnectionPublic:
    """``watch``: the watcher's report and the time before which a report is stale."""
    health = ConnectionHealth()
    if status is not None:
        health = ConnectionHealth.model_validate(status, from_attributes=True)
    view = row.view()
    shown = ConnectionPublic(
        **dict(view),
        has_password=row.password_enc is not None,
        authorization=(grant or "not_authorized") if view.protocol.is_oauth2 else None,
        status=health,
    )
    if watch is None:
        return shown
    return shown.model_copy(update={"watch": watch_status(view, *watch)})


def watch_status(
    view: ConnectionView, watch: ConnectionWatch | None, stale_before: datetime
) -> WatchStatus:
    """Whether the connection is watched: by choice not (push off, disabled, POP3), else as
    its watcher last reported, unless that report is older than ``stale_before``."""
    off = None
    if view.push is PushMode.OFF:
        off = "push is off for this connection: interval polls only"
    elif view.transport is Transport.POP3:
        off = "POP3 cannot announce new mail: interval polls only"
    elif not view.enabled:
        off = "the connection is disabled"
    if off is not None:
        return WatchStatus(watched=False, state=WatchState.OFF, reason=off)
    if watch is None:
        reason = "no watcher reports on it (is mailintake-watcher running?): interval polls only"
        return WatchStatus(watched=False, state=WatchState.UNKNOWN, reason=reason)
    if watch.confirmed_at < stale_before:
        when = watch.confirmed_at.strftime("%Y-%m-%d %H:%M:%S")
        reason = (
            f"its watcher ({watch.holder}) stopped reporting at {when} UTC: interval polls only"
        )
        return WatchStatus(watched=False, state=WatchState.UNKNOWN, reason=reason)
    state = WatchState(watch.state)
    return WatchStatus(
        watched=state is WatchState.WATCHING,
        state=state,
        method=WatchMethod(watch.method) if watch.method else None,
        since=watch.since,
        reason=watch.reason,
    )


def public(
    session: Session,
    rows: list[Connection],
    settings: Settings,
    waiting: Callable[[uuid.UUID], StoreWaiting | None] = lambda _id: None,
) -> list[ConnectionPublic]:
    """Connections as the API shows them, with their polling status, authorization and watch
    state, and what the store says it cannot write (``waiting``)."""
    ids = [row.id for row in rows]
    statuses = session.scalars(
        select(ConnectionStatus).where(ConnectionStatus.connection_id.in_(ids))
    ).all()
    grants = session.execute(
        select(OAuthGrant.connection_id, OAuthGrant.status).where(OAuthGrant.connection_id.in_(ids))
    ).all()
    status_of = {s.connection_id: s for s in statuses}
    grant_of = {g.connection_id: g.status for g in grants}
    app_only = set(
        session.scalars(
            select(Connection.id)
            .join(OAuthCredential, OAuthCredential.id == Connection.oauth_credential_id)
            .where(Connection.id.in_(ids), OAuthCredential.app_only)
        )
    )
    grant_of.update(dict.fromkeys(app_only, "app_only"))
    watch_of = {
        w.connection_id: w
        for w in session.scalars(
            select(ConnectionWatch).where(ConnectionWatch.connection_id.in_(ids))
        )
    }
    now = utcnow()
    stale = now - timedelta(seconds=STALE_AFTER_HEARTBEATS * settings.watch_heartbeat_seconds)
    shown = [
        to_public(row, status_of.get(row.id), grant_of.get(row.id), (watch_of.get(row.id), stale))
        for row in rows
    ]
    cutoff = now - timedelta(seconds=settings.stalled_after_seconds)
    for item in shown:  # the watchdog's rule, as the scheduler applies it
        last = item.status.last_success_at or item.updated_at
        item.status.stalled = item.enabled and last < cutoff
        report = waiting(item.id)
        if report is not None:
            item.status.waiting_for_store = f"downloaded, waiting for the store: {report.reason}"
            item.status.waiting_since = report.since
    return shown


def request_poll(
    session: Session,
    settings: Settings,
    row: Connection,
    reason: PollReason = PollReason.MANUAL,
) -> PollRequested:
    event = PollRequested(connection_id=row.id, requested_at=utcnow(), reason=reason)
    add_to_outbox(
        session, settings.topic_prefix, Topic.POLL_REQUESTED, str(row.id), event.to_bytes()
    )
    return event


def poll_in_progress(session: Session, connection_id: uuid.UUID) -> bool:
    """A fetcher holds the connection's lease: a poll is under way."""
    lease = session.get(PollLease, connection_id)
    return lease is not None and lease.expires_at > utcnow()


def _merge(
    row: Connection | None, body: ConnectionCreate | ConnectionUpdate
) -> rules.ConnectionDraft:
    """The connection as it would be after applying ``body`` to ``row``."""
    merged: dict[str, object] = {}
    if row is not None:
        merged = {name: getattr(row, name) for name in _DRAFT_FIELDS}
        if row.protocol != Protocol.MICROSOFT_OAUTH2:
            merged["transport"] = None  # implied by the protocol, not chosen
    merged.update(body.model_dump(exclude_unset=row is not None, exclude={"password"}))
    try:
        draft = rules.ConnectionDraft.model_validate(
            {k: v for k, v in merged.items() if v is not None}
        )
    except ValidationError as exc:
        raise InvalidInputError(
            [
                FieldError(field=".".join(map(str, e["loc"])), rule=f"{e['loc'][0]} cannot be null")
                for e in exc.errors()
            ]
        ) from None
    if "password" in body.model_fields_set:
        draft.has_password = body.password is not None
    else:
        draft.has_password = (
            row is not None and row.password_enc is not None and not draft.protocol.is_oauth2
        )
    return draft


def _validate(
    session: Session,
    settings: Settings,
    draft: rules.ConnectionDraft,
    own_id: uuid.UUID | None,
    *,
    unique_name: bool = True,
) -> None:
    errors = rules.check(draft, settings.microsoft_imap_hosts, settings.google_imap_hosts)
    if draft.protocol.is_oauth2 and draft.oauth_credential_id is not None:
        credential = session.get(OAuthCredential, draft.oauth_credential_id)
        if credential is None:
            rule = "oauth_credential_id must name a stored OAuth2 credential"
        elif credential.provider != (
            "google" if draft.protocol.value.startswith("google") else "microsoft"
        ):
            rule = "oauth_credential_id must name a credential of the connection's provider"
        elif credential.app_only and draft.transport is not Transport.GRAPH:
            rule = "an app-only credential serves the graph transport only"
        else:
            rule = ""
        if rule:
            errors.append(FieldError(field="oauth_credential_id", rule=rule))
    if errors:
        raise InvalidInputError(errors)
    if not unique_name:
        return
    clash = session.scalar(
        select(Connection.id).where(lower(session, Connection.name) == draft.name.lower())
    )
    if clash is not None and clash != own_id:
        raise NameTakenError(draft.name)


def _apply(row: Connection, draft: rules.ConnectionDraft) -> None:
    protocol = draft.protocol
    row.name = draft.name
    row.description = draft.description
    row.protocol = protocol.value
    row.transport = transport_for(protocol, draft.transport).value
    row.oauth_credential_id = draft.oauth_credential_id
    row.encryption = (
        Encryption.SSL if protocol.is_oauth2 else draft.encryption or Encryption.SSL
    ).value
    row.host = draft.host
    row.port = draft.port
    row.tls_verify = draft.tls_verify
    row.tls_ca_pem = draft.tls_ca_pem
    row.interval_minutes = draft.interval_minutes
    row.timeout_ms = draft.timeout_ms or DEFAULT_TIMEOUT_MS
    row.folder = None if protocol is Protocol.POP3 else draft.folder
    row.username = draft.username
    row.shared_mailbox = draft.shared_mailbox
    row.after_download = draft.after_download.value
    row.first_sync = draft.first_sync.value
    row.first_sync_since = draft.first_sync_since
    row.push = draft.push.value
    if not draft.has_password:
        row.password_enc = None


def _would_be(row: Connection, draft: rules.ConnectionDraft) -> Connection:
    """A copy of ``row`` with ``draft`` applied, outside the session."""
    copy = Connection(
        id=row.id,
        version=row.version,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
    _apply(copy, draft)
    return copy


def _seal_password(
    box: SecretBox, row: Connection, body: ConnectionCreate | ConnectionUpdate
) -> None:
    """The password sent, bound to the connection's id and destination."""
    if body.password is not None:
        row.password_enc = box.encrypt(body.password.get_secret_value(), password_binding(row))


def _announce(session: Session, settings: Settings, row: Connection) -> None:
    session.flush()
    event = ConnectionState(connection=row.view())
    add_to_outbox(session, settings.topic_prefix, Topic.CONNECTIONS, str(row.id), event.to_bytes())


def create(
    session: Session, settings: Settings, box: SecretBox, body: ConnectionCreate
) -> Connection:
    draft = _merge(None, body)
    _validate(session, settings, draft, None)
    row = Connection(
        id=uuid.uuid4(), version=1, enabled=False, created_at=utcnow(), updated_at=utcnow()
    )
    _apply(row, draft)
    _seal_password(box, row, body)
    session.add(row)
    _announce(session, settings, row)
    return row


def from_backup(session: Session, settings: Settings, values: dict[str, Any]) -> Connection:
    """The connection a backup's row describes, judged by the schemas and rules a create
    is; its password is the caller's to check. Raises pydantic's ``ValidationError``,
    ``InvalidInputError`` or ``NameTakenError``."""
    fields = {k: v for k, v in values.items() if k in _DRAFT_FIELDS and v is not None}
    if fields.get("protocol") != Protocol.MICROSOFT_OAUTH2:
        fields.pop("transport", None)  # implied by the protocol, not chosen
    draft = _merge(None, ConnectionCreate.model_validate(fields))
    draft.has_password = values.get("password_enc") is not None
    _validate(session, settings, draft, values["id"])
    row = Connection(
        id=values["id"],
        version=values.get("version") or 1,
        enabled=bool(values.get("enabled")),
        created_at=values.get("created_at") or utcnow(),
        updated_at=values.get("updated_at") or utcnow(),
    )
    _apply(row, draft)
    return row


def preview(
    session: Session, settings: Settings, box: SecretBox, body: ConnectionCreate
) -> Connection:
    """The connection ``body`` describes, validated but not saved (to test it)."""
    draft = _merge(None, body)
    _validate(session, settings, draft, None, unique_name=False)
    row = Connection(
        id=uuid.uuid4(), version=0, enabled=False, created_at=utcnow(), updated_at=utcnow()
    )
    _apply(row, draft)
    _seal_password(box, row, body)
    return row


def update(
    session: Session, settings: Settings, box: SecretBox, row: Connection, body: ConnectionUpdate
) -> Connection:
    draft = _merge(row, body)
    _validate(session, settings, draft, row.id)
    moved = destination_changes(row.view(), _would_be(row, draft).view())
    if moved and draft.has_password and body.password is None:
        changed = ", ".join(moved)
        raise InvalidInputError(
            [
                FieldError(
                    field="password",
                    rule=f"password is required again because {changed} changed: a stored "
                    "password goes only to the destination it was given for",
                )
            ]
        )
    if moved:  # an OAuth2 grant too: authorize the connection again for the new destination
        session.execute(sa.delete(OAuthGrant).where(OAuthGrant.connection_id == row.id))
    _apply(row, draft)
    _seal_password(box, row, body)
    _touch(row)
    _announce(session, settings, row)
    return row


def set_enabled(session: Session, settings: Settings, row: Connection, enabled: bool) -> Connection:
    if row.enabled != enabled:
        row.enabled = enabled
        _touch(row)
        _announce(session, settings, row)
    return row


def touch_and_announce(session: Session, settings: Settings, row: Connection) -> None:
    """A change of state outside the row's attributes (an authorization): a new version."""
    _touch(row)
    _announce(session, settings, row)


def delete(session: Session, settings: Settings, row: Connection) -> None:
    session.delete(row)
    add_to_outbox(session, settings.topic_prefix, Topic.CONNECTIONS, str(row.id), None)


def _touch(row: Connection) -> None:
    row.version += 1
    row.updated_at = utcnow()


def republish_all(session: Session, settings: Settings) -> int:
    """Queue every connection's current state again (the topic heals after a broker loss)."""
    count = 0
    for row in session.scalars(select(Connection).order_by(Connection.id)):
        _announce(session, settings, row)
        count += 1
    return count
