"""What every watch shares, whatever the method: the context it runs in (database, claims,
poll requests, the threads that may block), its back-off, and the state it reports."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from mailintake_shared.db.types import utcnow
from mailintake_shared.domain import ConnectionView
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings
from mailintake_shared.watch import WatchMethod, WatchState
from mailintake_watcher.claims import Claims, Refused
from mailintake_watcher.repository import WatchRepository
from mailintake_watcher.requester import PollRequester

log = get_logger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


# Sessions being set up at once: a thousand watches starting together (a restart, a
# rebalance) neither flood one mail server with logins nor starve the process of CPU.
SETTING_UP = 16


@dataclass
class WatchContext:
    """Shared by every watch of the process. Database calls block: they run in
    ``blocking``; calls to Microsoft Graph in ``remote`` (one that hangs, or that Graph
    throttles, never holds up the database work every other watch waits for); the claims'
    one database connection only ever in ``claiming``."""

    settings: Settings
    repository: WatchRepository
    claims: Claims
    requester: PollRequester
    blocking: ThreadPoolExecutor
    claiming: ThreadPoolExecutor
    remote: ThreadPoolExecutor
    setting_up: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SETTING_UP))

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.blocking, lambda: call(*args, **kwargs))

    async def run_remote(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.remote, call)

    async def claim(
        self, connection_id: uuid.UUID, server: tuple[str, str] | None
    ) -> Refused | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.claiming, self.claims.take, connection_id, server)

    async def release(self, connection_id: uuid.UUID) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.claiming, self.claims.release, connection_id)


class Backoff:
    """Delays between attempts: ``base`` doubled per failure in a row up to ``maximum``, with
    ±20 % jitter (a thousand watches of one server that restarts do not come back at once).
    A watch that stayed up longer than its next delay starts over from ``base``."""

    def __init__(
        self, base: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        self._base, self._maximum, self._rng = base, maximum, rng
        self.failures = 0

    def _delay(self, failures: int) -> float:
        return float(min(self._maximum, self._base * 2 ** max(0, failures - 1)))

    def next(self) -> float:
        self.failures += 1
        return self._delay(self.failures) * (0.8 + 0.4 * self._rng())

    def was_up(self, seconds: float) -> None:
        if seconds >= self._delay(self.failures + 1):
            self.failures = 0


class Watch:
    """One connection's watch; subclasses say how in ``run``. It reports its state to the
    database (for the API) whenever the state or its reason changes."""

    method: WatchMethod

    def __init__(self, context: WatchContext, view: ConnectionView) -> None:
        self.context = context
        self.view = view
        self.state = WatchState.CONNECTING
        self.reason: str | None = None
        self.since = utcnow()
        self.reported = False  # the database has the current state
        self.elsewhere = False  # another watcher holds the connection: its report stands
        self._writing = asyncio.Lock()  # one write at a time, each of the state then current
        settings = context.settings
        self.backoff = Backoff(
            settings.watch_reconnect_base_seconds, settings.watch_reconnect_max_seconds
        )

    @property
    def connection_id(self) -> uuid.UUID:
        return self.view.id

    async def run(self) -> None:
        raise NotImplementedError

    def new_mail(self) -> None:
        """The server announced new mail: a poll, through the scheduler."""
        self.context.requester.request(self.connection_id, self.method)

    async def refused(self, refused: Refused) -> None:
        self.elsewhere = refused.elsewhere
        await self.report(WatchState.WAITING, refused.reason)

    async def report(self, state: WatchState, reason: str | None = None) -> None:
        if state is not WatchState.WAITING:
            self.elsewhere = False
        if (state, reason) == (self.state, self.reason) and self.reported:
            return
        if state is not self.state:
            self.since = utcnow()
            log.info(
                "watch state",
                connection_id=str(self.connection_id),
                method=self.method.value,
                state=state.value,
                reason=reason,
            )
        self.state, self.reason = state, reason
        await self.write_report()

    async def write_report(self) -> None:
        """The current state into the database; on failure the heartbeat tries again."""
        async with self._writing:
            state, reason, since = self.state, self.reason, self.since
            try:
                await self.context.run(
                    self.context.repository.report,
                    self.connection_id,
                    state,
                    self.method,
                    reason,
                    since,
                    yield_to_holder=self.elsewhere,
                )
            except Exception as exc:
                self.reported = False
                log.warning(
                    "watch state not saved", connection_id=str(self.connection_id), error=str(exc)
                )
                return
            self.reported = (state, reason, since) == (self.state, self.reason, self.since)
