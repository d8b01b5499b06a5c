"""A local Microsoft Graph that speaks the documented mail endpoints: the delta query of a
folder (paged with ``@odata.nextLink``, ending in ``@odata.deltaLink``), a message's MIME
(``/$value``), ``PATCH`` (``isRead``) and ``DELETE``, mailbox folders, bearer tokens checked
against the local authorization server, and throttling (429 with ``Retry-After``) on demand.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.harness.oauth_server import OAuthServerState
from tests.harness.tls import TestPki


@dataclass
class GraphMessage:
    id: str
    mime: bytes
    received: str
    is_read: bool = False
    seq: int = 0
    deleted: bool = False


@dataclass
class GraphState:
    mailboxes: dict[str, dict[str, GraphMessage]] = field(default_factory=dict)
    delegates: dict[str, set[str]] = field(default_factory=dict)  # mailbox → users with access
    seq: int = 0
    page_size: int = 10
    throttle_every: int = 0  # every n-th request answers 429 (0: never)
    requests: int = 0
    throttled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class GraphServer:
    def __init__(self, pki: TestPki, oauth: OAuthServerState) -> None:
        self.state = GraphState()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, oauth))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_pem, pki.key_pem)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}/v1.0"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> GraphServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def deliver(self, mailbox: str, mime: bytes) -> str:
        with self.state.lock:
            self.state.seq += 1
            message = GraphMessage(
                id=f"AAMk-{uuid.uuid4().hex}",
                mime=mime,
                received=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                seq=self.state.seq,
            )
            self.state.mailboxes.setdefault(mailbox, {})[message.id] = message
            return message.id

    def messages(self, mailbox: str) -> list[GraphMessage]:
        with self.state.lock:
            return [m for m in self.state.mailboxes.get(mailbox, {}).values() if not m.deleted]


def _handler(state: GraphState, oauth: OAuthServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, body: dict[str, Any], **headers: str) -> None:
            self._send(status, json.dumps(body).encode(), "application/json", **headers)

        def _error(self, status: int, code: str) -> None:
            self._json(status, {"error": {"code": code, "message": code}})

        def _caller(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            with oauth.lock:
                found = oauth.access.get(auth.removeprefix("Bearer "))
            if found is None or found[2] < time.time() or (found[0] and found[0].revoked):
                return None
            return found[1]

        def _mailbox(self, parts: list[str]) -> dict[str, GraphMessage] | None:
            """Checks the caller may read the mailbox in the path (``/users/{id}/…``)."""
            with state.lock:
                state.requests += 1
                throttle = state.throttle_every and state.requests % state.throttle_every == 0
                if throttle:
                    state.throttled += 1
            if throttle:
                self._error_with_retry()
                return None
            caller = self._caller()
            if caller is None:
                self._error(401, "InvalidAuthenticationToken")
                return None
            user = unquote(parts[3])
            allowed = (
                caller == user
                or caller.startswith("app:")
                or caller in state.delegates.get(user, set())
            )
            if not allowed:
                self._error(403, "ErrorAccessDenied")
                return None
            if user not in state.mailboxes:
                self._error(404, "ErrorInvalidUser")
                return None
            return state.mailboxes[user]

        def _error_with_retry(self) -> None:
            self._json(
                429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, Retry_After="1"
            )

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = url.path.split("/")  # ['', 'v1.0', 'users', id, ...]
            mailbox = self._mailbox(parts)
            if mailbox is None:
                return
            rest = parts[4:]
            if rest == ["mailFolders", "inbox"]:
                with state.lock:
                    count = sum(not m.deleted for m in mailbox.values())
                self._json(200, {"id": "inbox", "displayName": "Inbox", "totalItemCount": count})
            elif rest == ["mailFolders", "inbox", "messages", "delta"]:
                self._delta(url.path, parse_qs(url.query), mailbox)
            elif len(rest) == 3 and rest[0] == "messages" and rest[2] == "$value":
                message = mailbox.get(rest[1])
                if message is None or message.deleted:
                    self._error(404, "ErrorItemNotFound")
                else:
                    self._send(200, message.mime, "text/plain")
            else:
                self._error(404, "ResourceNotFound")

        def _delta(
            self, path: str, query: dict[str, list[str]], mailbox: dict[str, GraphMessage]
        ) -> None:
            since = int(query.get("$deltatoken", ["0"])[0])
            skip = query.get("$skiptoken", [""])[0]
            with state.lock:
                if skip:
                    offset_text, snapshot_text, since_text = skip.split(".")
                    offset, snapshot, since = int(offset_text), int(snapshot_text), int(since_text)
                else:
                    offset, snapshot = 0, state.seq
                changed = sorted(
                    (m for m in mailbox.values() if since < m.seq <= snapshot), key=lambda m: m.seq
                )
                page = changed[offset : offset + state.page_size]
                items: list[dict[str, Any]] = [
                    {"id": m.id, "@removed": {"reason": "deleted"}}
                    if m.deleted
                    else {"id": m.id, "receivedDateTime": m.received, "isRead": m.is_read}
                    for m in page
                ]
            base = f"https://{self.headers['Host']}{path}"
            body: dict[str, Any] = {"value": items}
            if offset + state.page_size < len(changed):
                token = f"{offset + state.page_size}.{snapshot}.{since}"
                body["@odata.nextLink"] = f"{base}?$skiptoken={token}"
            else:
                body["@odata.deltaLink"] = f"{base}?$deltatoken={snapshot}"
            self._json(200, body)

        def _message(self) -> tuple[dict[str, GraphMessage], GraphMessage] | None:
            parts = urlsplit(self.path).path.split("/")
            mailbox = self._mailbox(parts)
            if mailbox is None:
                return None
            message = mailbox.get(parts[5]) if len(parts) == 6 and parts[4] == "messages" else None
            if message is None or message.deleted:
                self._error(404, "ErrorItemNotFound")
                return None
            return mailbox, message

        def do_PATCH(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            changes = json.loads(self.rfile.read(length) or b"{}")
            found = self._message()
            if found is None:
                return
            with state.lock:
                state.seq += 1
                found[1].is_read = bool(changes.get("isRead", found[1].is_read))
                found[1].seq = state.seq
            self._json(200, {"id": found[1].id, "isRead": found[1].is_read})

        def do_DELETE(self) -> None:
            found = self._message()
            if found is None:
                return
            with state.lock:
                state.seq += 1
                found[1].deleted, found[1].seq = True, state.seq
            self.send_response(204)
            self.end_headers()

    return Handler
