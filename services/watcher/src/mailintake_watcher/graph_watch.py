"""A Microsoft Graph connection's watch: a change-notification subscription of its folder
(messages ``created``), kept alive; the notifications themselves reach the config API
(``MAILINTAKE_GRAPH_NOTIFICATION_URL``), which asks for the polls.

Every ``MAILINTAKE_WATCH_HEARTBEAT_SECONDS`` the watch makes sure the subscription exists and
lives: it is created when there is none (Graph validates the URL first: the config API echoes
the ``validationToken``), renewed when half its lifetime has passed or when a lifecycle
notification asked for reauthorization, and created anew when Graph removed it. A new
subscription is followed by a poll: changes made while none existed are caught by the delta
query, which stays the source of truth (a notification only triggers a poll). The
``clientState`` is a fresh random secret per subscription; only its SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from datetime import datetime, timedelta

from mailintake_shared.db.types import utcnow
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import PollError, classify
from mailintake_shared.mailbox.graph import GraphMailbox
from mailintake_shared.watch import WatchMethod, WatchState
from mailintake_watcher.metrics import RECONNECTS
from mailintake_watcher.repository import Subscription
from mailintake_watcher.watch import Watch

_SLOW_DOWN = (ErrorKind.AUTHENTICATION, ErrorKind.AUTHORIZATION_REQUIRED, ErrorKind.THROTTLED)
NOT_CONFIGURED = (
    "MAILINTAKE_GRAPH_NOTIFICATION_URL is not set: Microsoft Graph has nowhere to send "
    "change notifications"
)


class GraphWatch(Watch):
    method = WatchMethod.GRAPH

    async def run(self) -> None:
        settings = self.context.settings
        if not settings.graph_notification_url:
            await self.report(WatchState.UNSUPPORTED, NOT_CONFIGURED)
            await asyncio.Event().wait()  # until stopped: the setting needs a restart
        await self.report(WatchState.CONNECTING)
        while True:
            refused = await self.context.claim(self.connection_id, None)
            if refused is not None:
                await self.refused(refused)
                await asyncio.sleep(self.backoff.next())
                continue
            delay = 0.0
            try:
                while True:
                    if await self.context.run_remote(self.keep_subscribed):
                        self.new_mail()  # what came while there was no subscription
                    await self.report(WatchState.WATCHING)
                    self.backoff.failures = 0
                    await asyncio.sleep(settings.watch_heartbeat_seconds)
            except Exception as exc:
                error = classify(exc)
                RECONNECTS.labels(self.method.value).inc()
                await self.report(WatchState.RETRYING, f"{error.kind.value}: {error}")
                delay = self.backoff.next()
                if error.kind in _SLOW_DOWN:
                    delay = max(delay, settings.watch_reconnect_max_seconds)
            finally:
                await self.context.release(self.connection_id)
            await asyncio.sleep(delay)

    def keep_subscribed(self) -> bool:
        """Create, renew or recreate the subscription as due (blocking: HTTP and the
        database); True when a new one was created."""
        repository, settings = self.context.repository, self.context.settings
        lifetime = timedelta(minutes=settings.graph_subscription_minutes)
        current = repository.subscription(self.connection_id)
        now = utcnow()
        due = _due(current, now, lifetime)
        if due is None:
            return False  # nothing due: no token asked for, no request to Graph
        config = repository.config(self.connection_id)
        if config is None:
            return False  # deleted meanwhile: the supervisor stops this watch
        graph = _graph(config)
        if due == "renew" and current is not None:
            try:
                expires = graph.renew(current.subscription_id, now + lifetime)
            except PollError as exc:
                if exc.kind is not ErrorKind.FOLDER_MISSING and "404" not in str(exc):
                    raise
            else:  # renewed (which also reauthorizes it)
                repository.renewed(current.subscription_id, expires, current.needs)
                return False
        if current is not None:  # gone, expired or removed by Graph: a new one
            with contextlib.suppress(PollError):
                graph.unsubscribe(current.subscription_id)
        client_state = secrets.token_urlsafe(32)
        url = settings.graph_notification_url or ""
        subscription_id, expires = graph.subscribe(url, client_state, now + lifetime)
        repository.save_subscription(
            self.connection_id,
            subscription_id,
            hashlib.sha256(client_state.encode()).hexdigest(),
            expires,
        )
        return True

    def retire(self) -> None:
        """The connection is no longer watched (disabled, deleted, push off, changed): its
        subscription is deleted at Graph when the connection still allows it, and forgotten
        here either way (one that cannot be deleted expires by itself)."""
        repository = self.context.repository
        current = repository.subscription(self.connection_id)
        if current is None:
            return
        try:
            config = repository.config(self.connection_id)
            if config is not None:
                _graph(config).unsubscribe(current.subscription_id)
        finally:
            repository.drop_subscription(self.connection_id)


def _graph(config: MailboxConfig) -> GraphMailbox:
    """Graph for one round of work, whose waits for throttling end within the connection's
    time-out: a ``Retry-After`` of an hour is a throttled attempt, tried again after the
    back-off, not a thread asleep for an hour."""
    return GraphMailbox.open(config, deadline=time.monotonic() + config.view.timeout_ms / 1000)


def _due(current: Subscription | None, now: datetime, lifetime: timedelta) -> str | None:
    """What the subscription needs now: ``create`` (none, expired, or removed by Graph),
    ``renew`` (half its lifetime gone, or Graph asked to reauthorize it), or nothing."""
    if current is None or current.needs == "recreate" or current.expires_at <= now:
        return "create"
    if current.needs is not None or current.expires_at - now <= lifetime / 2:
        return "renew"
    return None
