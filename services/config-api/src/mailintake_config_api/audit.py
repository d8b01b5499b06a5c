"""The audit log: every configuration change through the API — who (the token's role and
fingerprint, the client's address), what (the route and its path parameters, the names of the
fields sent), when, and how it ended. Field values are never recorded: they may be secrets.

A pure ASGI middleware, so that no route can forget it: every authenticated POST, PUT, PATCH
and DELETE, and the OAuth2 callback when it stored a grant, is written to ``audit_log`` after the
answer, and logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import anyio
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailintake_shared.db.models import AuditEntry
from mailintake_shared.logging import get_logger

log = get_logger(__name__)

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OAUTH_CALLBACK = "/oauth/callback"  # a browser redirect from the provider: no bearer token


class AuditLog:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        audited = scope["type"] == "http" and (scope["method"] in CHANGES or path == OAUTH_CALLBACK)
        if not audited:
            await self._app(scope, receive, send)
            return
        body = bytearray()
        status = 500

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, recording_receive, recording_send)
        finally:
            actor = scope.get("state", {}).get("actor")
            if path == OAUTH_CALLBACK:  # anyone can call it: only a grant stored is a change
                actor = "oauth-provider-redirect" if status < 400 else None
            if actor is not None:  # unauthenticated attempts are in the log, not here
                entry = _entry(scope, actor, bytes(body), status)
                log.info("audit", **{k: v for k, v in vars(entry).items() if k != "at"})
                resources = getattr(scope["app"].state, "resources", None)
                if resources is not None:
                    await anyio.to_thread.run_sync(_write, resources.sessions, entry)


@dataclass
class _Entry:
    actor: str
    client: str | None
    action: str
    target: str | None
    fields: str | None
    status: int


def _entry(scope: Scope, actor: str, body: bytes, status: int) -> _Entry:
    route = scope.get("route")
    template = getattr(route, "path", None) or str(scope.get("path", ""))
    params = scope.get("path_params") or {}
    client = scope.get("client")
    return _Entry(
        actor=actor,
        client=str(client[0]) if client else None,
        action=f"{scope['method']} {template}",
        target=json.dumps({k: str(v) for k, v in params.items()}) if params else None,
        fields=_field_names(body, _is_form(scope)),
        status=status,
    )


def _is_form(scope: Scope) -> bool:
    kind: bytes = dict(scope.get("headers") or []).get(b"content-type", b"")
    return kind.split(b";")[0].strip().lower() == b"application/x-www-form-urlencoded"


def _field_names(body: bytes, form: bool) -> str | None:
    """The top-level names of a JSON object body, or of a form (the console's, without its
    CSRF token); nothing of their values. Anything else (a malformed body may hold a secret
    anywhere) records no names."""
    if form:
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except ValueError:
            return None
        return json.dumps(sorted({name for name, _ in pairs} - {"csrf"}))
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return None
    return json.dumps(sorted(parsed)) if isinstance(parsed, dict) else None


def _write(sessions: Any, entry: _Entry) -> None:
    try:
        with sessions() as session, session.begin():
            session.add(AuditEntry(**vars(entry)))
    except Exception as exc:  # the answer is sent; the log line above still says it
        log.error("audit entry not stored", error=str(exc), action=entry.action)


def page(
    session: Session,
    *,
    since: datetime | None,
    until: datetime | None,
    actor: str | None,
    limit: int,
    offset: int,
) -> tuple[list[AuditEntry], int]:
    query = select(AuditEntry)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total
