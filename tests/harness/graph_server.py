"""A local Microsoft Graph that speaks the documented mail endpoints: the delta query of a
folder (paged with ``@odata.nextLink``, ending in ``@odata.deltaLink``), a message's MIME
(``/$value``), ``PATCH`` (``isRead``) and ``DELETE``, mailbox folders, bearer tokens checked
against the local authorization server, and throttling (429 with ``Retry-After``) on demand.

Change notifications as Graph documents them: ``POST /subscriptions`` first validates the
notification URLs (a ``POST`` with ``?validationToken=…`` answered 200 with the token as
plain text within 10 s, else 400 ``ValidationError``), expirations beyond the maximum for
messages are refused, ``PATCH`` renews, ``DELETE`` removes. A message delivered to a watched
mailbox is announced to each live subscription (``changeType: created``, with its
``clientState``), tried again on a non-2xx answer as Graph does; tests send lifecycle
notifications (``reauthorizationRequired``, ``subscriptionRemoved``, ``missed``) or remove a
subscription, and read what was sent (``GraphState.sent``).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

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


MAX_MINUTES = 10080  # the longest subscription to Outlook messages Graph allows


@dataclass
class GraphSubscription:
    id: str
    mailbox: str
    resource: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str
    expires: datetime

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "changeType": "created",
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": self.expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        }


@dataclass
class Sent:
    """A notification Graph posted: to which URL, what, and the answer's status."""

    url: str
    payload: dict[str, Any]
    status: int


@dataclass
class GraphState:
    mailboxes: dict[str, dict[str, GraphMessage]] = field(default_factory=dict)
    delegates: dict[str, set[str]] = field(default_factory=dict)  # mailbox → users with access
    seq: int = 0
    page_size: int = 10
    throttle_every: int = 0  # every n-th request answers 429 (0: never)
    retry_after: str = "1"  # the Retry-After of those 429s, in seconds
    requests: int = 0
    throttled: int = 0
    subscriptions: dict[str, GraphSubscription] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    renewals: int = 0
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
            watching = [s for s in self.state.subscriptions.values() if s.mailbox == mailbox]
        for subscription in watching:
            change = {
                "changeType": "created",
                "resource": f"{subscription.resource}/{message.id}",
                "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": message.id},
            }
            self._notify(subscription, subscription.notification_url, change)
        return message.id

    def messages(self, mailbox: str) -> list[GraphMessage]:
        with self.state.lock:
            return [m for m in self.state.mailboxes.get(mailbox, {}).values() if not m.deleted]

    def subscriptions(self, mailbox: str) -> list[GraphSubscription]:
        with self.state.lock:
            return [s for s in self.state.subscriptions.values() if s.mailbox == mailbox]

    def lifecycle(self, subscription_id: str, event: str, *, remove: bool = False) -> None:
        """A lifecycle notification (``reauthorizationRequired``, ``subscriptionRemoved``,
        ``missed``); ``remove`` also deletes the subscription first, as Graph does."""
        with self.state.lock:
            subscription = self.state.subscriptions[subscription_id]
            if remove:
                del self.state.subscriptions[subscription_id]
        url = subscription.lifecycle_url or subscription.notification_url
        self._notify(subscription, url, {"lifecycleEvent": event})

    def forge(self, url: str, subscription_id: str, client_state: str) -> int:
        """A notification that did not come from this Graph; the status it got."""
        payload = {"value": [{"subscriptionId": subscription_id, "clientState": client_state}]}
        return _post(url, payload)

    def _notify(self, subscription: GraphSubscription, url: str, item: dict[str, Any]) -> None:
        payload = {
            "value": [
                {
                    "subscriptionId": subscription.id,
                    "subscriptionExpirationDateTime": subscription.body()["expirationDateTime"],
                    "clientState": subscription.client_state,
                    "tenantId": "contoso",
                    **item,
                }
            ]
        }

        def send() -> None:
            for attempt in range(5):  # Graph retries a notification that was not taken
                status = _post(url, payload)
                with self.state.lock:
                    self.state.sent.append(Sent(url, payload, status))
                if 200 <= status < 300:
                    return
                time.sleep(0.5 * (attempt + 1))

        threading.Thread(target=send, daemon=True).start()


def _post(url: str, payload: dict[str, Any]) -> int:
    """POST a notification collection; the answer's status (0: no answer)."""
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _validated(url: str) -> bool:
    """Graph's handshake: the URL answers 200 with the token, as plain text."""
    token = f"Validation: Testing client application reachability {uuid.uuid4().hex}"
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{url}?validationToken={quote(token)}",
        data=b"",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200 and response.read().decode() == token)
    except OSError:
        return False


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
                429,
                {"error": {"code": "TooManyRequests", "message": "slow down"}},
                Retry_After=state.retry_after,
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

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            parsed: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return parsed

        def _subscription(self) -> GraphSubscription | None:
            """The subscription in the path, its caller checked."""
            if self._caller() is None:
                self._error(401, "InvalidAuthenticationToken")
                return None
            subscription_id = urlsplit(self.path).path.split("/")[3]
            with state.lock:
                found = state.subscriptions.get(subscription_id)
            if found is None:
                self._error(404, "ResourceNotFound")
            return found

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/v1.0/subscriptions":
                self._error(404, "ResourceNotFound")
                return
            body = self._body()
            resource = str(body.get("resource", ""))
            parts = ["", "v1.0", *resource.split("/")]  # users/{id}/mailFolders/inbox/messages
            if parts[2:3] != ["users"] or parts[4:] != ["mailFolders", "inbox", "messages"]:
                self._error(400, "InvalidRequest")
                return
            if self._mailbox(parts) is None:
                return
            expires = datetime.fromisoformat(str(body["expirationDateTime"]).replace("Z", "+00:00"))
            if expires > datetime.now(UTC) + timedelta(minutes=MAX_MINUTES):
                self._error(400, "ExpirationDateTimeTooFarInFuture")
                return
            urls = {body["notificationUrl"], body.get("lifecycleNotificationUrl")} - {None}
            if not all(_validated(url) for url in urls):
                self._error(400, "ValidationError")
                return
            subscription = GraphSubscription(
                id=str(uuid.uuid4()),
                mailbox=unquote(parts[3]),
                resource=resource,
                notification_url=body["notificationUrl"],
                lifecycle_url=body.get("lifecycleNotificationUrl"),
                client_state=str(body.get("clientState", "")),
                expires=expires,
            )
            with state.lock:
                state.subscriptions[subscription.id] = subscription
            self._json(201, subscription.body())

        def do_PATCH(self) -> None:
            if urlsplit(self.path).path.startswith("/v1.0/subscriptions/"):
                subscription = self._subscription()
                if subscription is not None:
                    expires = str(self._body()["expirationDateTime"]).replace("Z", "+00:00")
                    with state.lock:
                        subscription.expires = datetime.fromisoformat(expires)
                        state.renewals += 1
                    self._json(200, subscription.body())
                return
            changes = self._body()
            found = self._message()
            if found is None:
                return
            with state.lock:
                state.seq += 1
                found[1].is_read = bool(changes.get("isRead", found[1].is_read))
                found[1].seq = state.seq
            self._json(200, {"id": found[1].id, "isRead": found[1].is_read})

        def do_DELETE(self) -> None:
            if urlsplit(self.path).path.startswith("/v1.0/subscriptions/"):
                subscription = self._subscription()
                if subscription is not None:
                    with state.lock:
                        state.subscriptions.pop(subscription.id, None)
                    self.send_response(204)
                    self.end_headers()
                return
            found = self._message()
            if found is None:
                return
            with state.lock:
                state.seq += 1
                found[1].deleted, found[1].seq = True, state.seq
            self.send_response(204)
            self.end_headers()

    return Handler
