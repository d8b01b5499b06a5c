"""An IMAP connection's watch: one session idling on the folder (RFC 2177).

Each attempt claims the connection and a session of its budgets (``claims.py``), logs in as
a poll would, examines the folder and idles in rounds of
``MAILINTAKE_WATCH_IDLE_RENEW_SECONDS``. An ``EXISTS`` above the known count asks for a poll.
So does coming (back) up with the folder ahead of the stored cursor: mail that arrived while
the watch was down is not left to the next interval. A broken session is set up again after
a back-off (authentication failures wait the longest); a server without IDLE is reported
``unsupported`` and checked again hourly. The interval poll goes on whatever happens here.
"""

from __future__ import annotations

import asyncio
import time

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import classify
from mailintake_shared.mailbox.imap import FolderInfo
from mailintake_shared.mailbox.imap_idle import IdleSession, IdleUnsupportedError
from mailintake_shared.watch import WatchMethod, WatchState
from mailintake_watcher.metrics import RECONNECTS
from mailintake_watcher.watch import Watch

_RECHECK_UNSUPPORTED_S = 3600.0
# A server that ends every IDLE as soon as it began gets one a second, not thousands: the loop
# that holds every other watch is not its to spin (news meanwhile comes with the next IDLE).
_ROUND_AT_LEAST_S = 1.0
_SLOW_DOWN = (ErrorKind.AUTHENTICATION, ErrorKind.AUTHORIZATION_REQUIRED, ErrorKind.THROTTLED)


class ImapWatch(Watch):
    method = WatchMethod.IMAP_IDLE

    async def run(self) -> None:
        await self.report(WatchState.CONNECTING)
        while True:
            await asyncio.sleep(await self._attempt())

    async def _attempt(self) -> float:
        """One session, from claim to break; the delay before the next attempt."""
        view, settings = self.view, self.context.settings
        refused = await self.context.claim(view.id, (view.host or "", view.username))
        if refused is not None:
            await self.refused(refused)
            return self.backoff.next()
        up_since: float | None = None

        async def idling() -> None:
            nonlocal up_since
            if up_since is None:
                up_since = time.monotonic()
                await self.report(WatchState.WATCHING)

        config: MailboxConfig | None = None
        try:
            async with self.context.setting_up:
                config = await self.context.run(self.context.repository.config, view.id)
                if config is None:  # deleted meanwhile: the supervisor stops this watch
                    return settings.watch_reconnect_max_seconds
                session = await IdleSession.open(config)
            try:
                info = await session.examine(config.folder)
                await self._catch_up(config, info)
                while True:
                    began = time.monotonic()
                    await session.idle(settings.watch_idle_renew_seconds, self.new_mail, idling)
                    await asyncio.sleep(_ROUND_AT_LEAST_S - (time.monotonic() - began))
            finally:
                await session.close()
        except IdleUnsupportedError as exc:
            await self.report(WatchState.UNSUPPORTED, _scrubbed(config, str(exc)))
            return _RECHECK_UNSUPPORTED_S
        except Exception as exc:
            error = classify(exc)
            RECONNECTS.labels(self.method.value).inc()
            if up_since is not None:
                self.backoff.was_up(time.monotonic() - up_since)
            delay = self.backoff.next()
            if error.kind in _SLOW_DOWN:
                delay = max(delay, settings.watch_reconnect_max_seconds)
            await self.report(
                WatchState.RETRYING, _scrubbed(config, f"{error.kind.value}: {error}")
            )
            return delay
        finally:
            await self.context.release(view.id)

    async def _catch_up(self, config: MailboxConfig, info: FolderInfo) -> None:
        """Ask for a poll when the folder holds mail above the stored cursor (or its
        UIDVALIDITY changed): it arrived while nobody watched. A mailbox never polled is
        left to the scheduler's first poll."""
        cursor = await self.context.run(self.context.repository.cursor, self.view.id, config.folder)
        if cursor is None or not info.exists:
            return
        if (
            cursor.uidvalidity != info.uidvalidity
            or info.uidnext is None
            or info.uidnext - 1 > cursor.last_uid
        ):
            self.new_mail()


def _scrubbed(config: MailboxConfig | None, reason: str) -> str:
    """The server's words without the connection's secret, in any form it could quote back
    (they reach the API and the logs)."""
    return reason if config is None else config.scrub(reason)
