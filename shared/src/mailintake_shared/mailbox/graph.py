"""Microsoft Graph mail behind a small interface: the folder's delta query (the cursor),
a message's MIME, the server actions (``isRead``, delete), and change-notification
subscriptions of the folder (created messages, for push).

Every request asks for immutable ids (``Prefer: IdType="ImmutableId"``), which stay the same
when a message moves, so they are the dedup key. Throttling (429, 503) is honoured with the
server's ``Retry-After``, else exponential back-off with jitter, within a deadline; a token the
service refuses (401) is refreshed once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import FolderMissingError, PollError
from mailintake_shared.mailbox.session import Session

_PREFER = 'IdType="ImmutableId", odata.maxpagesize=50'
_RETRIES = 6


@dataclass(frozen=True)
class DeltaItem:
    id: str
    removed: bool
    received: str | None
    is_read: bool


@dataclass(frozen=True)
class DeltaPage:
    items: list[DeltaItem]
    url: str  # the link that produced this page (resume here to see it again)
    next_link: str | None  # more pages of this round
    delta_link: str | None  # the round is over: the cursor for the next poll


class GraphMailbox(Session):
    def __init__(
        self,
        config: MailboxConfig,
        endpoint: str,
        session: requests.Session,
        *,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
    ) -> None:
        if config.access_token is None:
            raise PollError(ErrorKind.AUTHORIZATION_REQUIRED, "Graph needs an OAuth2 token")
        self._token = config.access_token
        self._timeout = config.view.timeout_ms / 1000
        mailbox = config.view.shared_mailbox or config.view.username
        self._endpoint = endpoint.rstrip("/")
        self._base = f"{self._endpoint}/users/{quote(mailbox)}"
        self._folder = config.folder
        self._http = session
        self._sleep = sleep
        self._deadline = deadline
        self.throttled = 0

    @classmethod
    def open(cls, config: MailboxConfig, **kwargs: Any) -> GraphMailbox:
        endpoint, session = config.graph or ("", requests.Session())
        return cls(config, endpoint, session, **kwargs)

    # --- requests ---------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        refreshed = False
        delay = 1.0
        for _ in range(_RETRIES):
            headers = {"Authorization": f"Bearer {self._token(refreshed)}", "Prefer": _PREFER}
            try:
                response = self._http.request(
                    method, url, headers=headers, timeout=self._timeout, **kwargs
                )
            except requests.Timeout as exc:
                raise PollError(
                    ErrorKind.TIMEOUT, "Microsoft Graph did not answer in time"
                ) from exc
            except requests.RequestException as exc:
                raise PollError(ErrorKind.SERVER_ERROR, f"Microsoft Graph: {exc}") from exc
            if response.status_code == 401 and not refreshed:
                refreshed = True  # the token was refused: a fresh one, once
                continue
            if response.status_code in (429, 503, 504):
                self.throttled += 1
                wait = _retry_after(response) or delay * (1 + random.random())  # noqa: S311
                delay = min(delay * 2, 60.0)
                if self._deadline is not None and time.monotonic() + wait > self._deadline:
                    raise PollError(ErrorKind.THROTTLED, "Microsoft Graph is throttling")
                self._sleep(wait)
                continue
            return _checked(response)
        raise PollError(ErrorKind.THROTTLED, "Microsoft Graph kept throttling the request")

    def folder_url(self) -> str:
        if self._folder.upper() == "INBOX":
            return f"{self._base}/mailFolders/inbox"
        return f"{self._base}/mailFolders/{quote(self._folder)}"

    def count(self) -> int:
        """Messages in the folder (``totalItemCount``)."""
        return int(self._request("GET", self.folder_url()).json().get("totalItemCount", 0))

    def delta(self, link: str | None) -> Iterator[DeltaPage]:
        """The folder's changes since ``link`` (everything when None), page by page."""
        url: str | None = link or (
            f"{self.folder_url()}/messages/delta?$select=id,receivedDateTime,isRead"
        )
        while url is not None:
            body = self._request("GET", url).json()
            items = [
                DeltaItem(
                    id=item["id"],
                    removed="@removed" in item,
                    received=item.get("receivedDateTime"),
                    is_read=bool(item.get("isRead")),
                )
                for item in body.get("value", [])
            ]
            next_link = body.get("@odata.nextLink")
            yield DeltaPage(items, url, next_link, body.get("@odata.deltaLink"))
            url = next_link

    def mime(self, message_id: str, piece_size: int) -> Iterator[bytes]:
        """The message's MIME (``/$value``), streamed in pieces. Raises ``PollError`` (kind
        ``server_error``, "ErrorItemNotFound" in its text when the message is gone) on the
        first piece when Graph refuses it."""
        response = self._request(
            "GET", f"{self._base}/messages/{quote(message_id)}/$value", stream=True
        )
        try:
            yield from response.iter_content(chunk_size=piece_size)
        finally:
            response.close()

    def mark_read(self, message_id: str) -> None:
        self._action("PATCH", message_id, json={"isRead": True})

    def delete(self, message_id: str) -> None:
        self._action("DELETE", message_id)

    def _action(self, method: str, message_id: str, **kwargs: Any) -> None:
        try:
            self._request(method, f"{self._base}/messages/{quote(message_id)}", **kwargs)
        except PollError as exc:
            if "ErrorItemNotFound" not in str(exc):  # already gone: nothing left to do
                raise

    # --- change notifications (subscriptions) ------------------------------------------------
    def subscribe(
        self, notification_url: str, client_state: str, expires: datetime
    ) -> tuple[str, datetime]:
        """A subscription to messages created in the folder, its change and lifecycle
        notifications posted to ``notification_url`` (Graph first validates the URL: the
        ``validationToken`` handshake); returns its id and expiry."""
        resource = self.folder_url().removeprefix(self._endpoint + "/") + "/messages"
        body = {
            "changeType": "created",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": _graph_time(expires),
            "clientState": client_state,
        }
        created = self._request("POST", f"{self._endpoint}/subscriptions", json=body).json()
        return str(created["id"]), _parse_time(created["expirationDateTime"])

    def renew(self, subscription_id: str, expires: datetime) -> datetime:
        """A new expiry for the subscription (which also reauthorizes it); its expiry."""
        url = f"{self._endpoint}/subscriptions/{quote(subscription_id)}"
        body = {"expirationDateTime": _graph_time(expires)}
        return _parse_time(self._request("PATCH", url, json=body).json()["expirationDateTime"])

    def unsubscribe(self, subscription_id: str) -> None:
        """Delete the subscription; one that is gone already is fine."""
        url = f"{self._endpoint}/subscriptions/{quote(subscription_id)}"
        try:
            self._request("DELETE", url)
        except PollError as exc:
            if exc.kind is not ErrorKind.FOLDER_MISSING and "404" not in str(exc):
                raise


def _graph_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse_time(text: str) -> datetime:
    """Graph's ``2026-03-20T11:00:00.0000000Z`` (seven fractional digits) as a datetime."""
    day, _, clock = text.rstrip("Z").partition("T")
    whole = clock.split(".")[0]
    return datetime.fromisoformat(f"{day}T{whole}+00:00")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


def _checked(response: requests.Response) -> requests.Response:
    if response.status_code < 400:
        return response
    try:
        code = response.json().get("error", {}).get("code", "")
    except ValueError:
        code = ""
    text = f"Microsoft Graph answered {response.status_code} {code}"
    if response.status_code == 404 and code in ("ErrorInvalidUser", "ResourceNotFound"):
        raise FolderMissingError(f"{code}: the mailbox or folder does not exist")
    if response.status_code in (401, 403):
        raise PollError(ErrorKind.AUTHENTICATION, text)
    raise PollError(ErrorKind.SERVER_ERROR, text)
