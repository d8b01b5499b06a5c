"""The watches of one watcher process, on one asyncio loop: started, restarted and stopped as
the connections it owns change, and kept honest by a heartbeat.

Which connections are watched: enabled ones with ``push: auto``, by IMAP IDLE when they
speak IMAP (every protocol but POP3), by a Graph subscription on the Graph transport. A
connection's new version restarts its watch (a Graph subscription is then replaced), only
once the old watch has stopped and let go of its claims. A connection that goes to another
replica (a rebalance) is handed over: its watch stops, its subscription stays. The heartbeat
(``MAILINTAKE_WATCH_HEARTBEAT_SECONDS``) confirms this process's reports in the database,
writes again the ones that failed, updates the metrics, and stops and restarts every watch
when the claims' database connection was lost (another replica may hold them now).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mailintake_shared.domain import ConnectionView, PushMode, Transport
from mailintake_shared.logging import get_logger
from mailintake_shared.watch import WatchMethod, WatchState
from mailintake_watcher.graph_watch import GraphWatch
from mailintake_watcher.imap_watch import ImapWatch
from mailintake_watcher.metrics import CONNECTIONS, WATCHED
from mailintake_watcher.watch import Watch, WatchContext

log = get_logger(__name__)


def watch_kind(view: ConnectionView) -> type[Watch] | None:
    """How the connection is watched; None when it is not."""
    if not view.enabled or view.push is PushMode.OFF:
        return None
    if view.transport is Transport.GRAPH:
        return GraphWatch
    if view.transport is Transport.IMAP:
        return ImapWatch
    return None  # POP3 has no way to announce new mail


@dataclass
class _Running:
    watch: Watch
    task: asyncio.Task[None]


class Supervisor:
    def __init__(self, context: WatchContext) -> None:
        self._context = context
        self._running: dict[uuid.UUID, _Running] = {}
        self._stopping: dict[uuid.UUID, asyncio.Task[None]] = {}

    # --- changes (on the loop; the Kafka thread hands them over) ------------------------------
    def apply(self, views: Iterable[ConnectionView], removed: Iterable[uuid.UUID]) -> None:
        """Connections changed (their latest versions) or were deleted."""
        for view in views:
            running = self._running.get(view.id)
            kind = watch_kind(view)
            if running is not None and (kind is None or running.watch.view.version < view.version):
                self._stop(view.id, retire=True)
            elif running is not None:
                continue  # the same version again (the config API republishes now and then)
            if kind is not None:
                self._start(kind(self._context, view))
        for connection_id in removed:
            if connection_id in self._running:
                self._stop(connection_id, retire=True)

    async def hand_over(self, connection_ids: Iterable[uuid.UUID]) -> None:
        """These connections went to another replica: stop watching them, and wait until
        their claims are let go (the other replica may take them as soon as that)."""
        stops = [self._stop(cid, retire=False) for cid in connection_ids if cid in self._running]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)

    def _start(self, watch: Watch) -> None:
        after = self._stopping.get(watch.connection_id)

        async def run() -> None:
            if after is not None:
                with contextlib.suppress(Exception):
                    await after  # the previous watch has let go of its claims
            await watch.run()

        task = asyncio.get_running_loop().create_task(run())
        task.add_done_callback(lambda t: self._ended(watch, t))
        self._running[watch.connection_id] = _Running(watch, task)

    def _ended(self, watch: Watch, task: asyncio.Task[None]) -> None:
        """A watch ends only when stopped; one that ended by an error starts again later."""
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "a watch ended by an error; it starts again",
            connection_id=str(watch.connection_id),
            error=repr(task.exception()),
        )

        def again() -> None:
            running = self._running.get(watch.connection_id)
            if running is not None and running.task is task:
                del self._running[watch.connection_id]
                self._start(type(watch)(self._context, watch.view))

        delay = self._context.settings.watch_reconnect_max_seconds
        asyncio.get_running_loop().call_later(delay, again)

    def _stop(self, connection_id: uuid.UUID, *, retire: bool) -> asyncio.Task[None]:
        running = self._running.pop(connection_id)
        running.task.cancel()
        context = self._context

        async def stopped() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
            if retire and isinstance(running.watch, GraphWatch):
                try:
                    await context.run_remote(running.watch.retire)
                except Exception as exc:
                    log.warning(
                        "Graph subscription not deleted",
                        connection_id=str(connection_id),
                        error=str(exc),
                    )
            with contextlib.suppress(Exception):
                await context.run(context.repository.forget, [connection_id])

        task = asyncio.get_running_loop().create_task(stopped())
        self._stopping[connection_id] = task
        task.add_done_callback(lambda _: self._forget_stop(connection_id, task))
        return task

    def _forget_stop(self, connection_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if self._stopping.get(connection_id) is task:
            del self._stopping[connection_id]

    # --- the heartbeat ---------------------------------------------------------------------------
    async def heartbeat(self) -> None:
        context = self._context
        loop = asyncio.get_running_loop()
        alive = await loop.run_in_executor(context.claiming, context.claims.alive)
        if not alive:
            log.warning("the claims' database connection was lost; restarting every watch")
            for connection_id in list(self._running):
                watch = self._running[connection_id].watch
                self._stop(connection_id, retire=False)
                self._start(type(watch)(context, watch.view))
        watches = [running.watch for running in self._running.values()]
        for watch in watches:
            if not watch.reported:
                await watch.write_report()
        reported = [watch.connection_id for watch in watches if watch.reported]
        try:
            unconfirmed = await context.run(context.repository.confirm, reported)
        except Exception as exc:
            log.warning("watch states not confirmed", error=str(exc))
            unconfirmed = set()
        for watch in watches:  # a report another watcher replaced, or one deleted: again
            if watch.connection_id in unconfirmed:
                watch.reported = False
        self.update_metrics()

    def update_metrics(self) -> None:
        counts = Counter((r.watch.method, r.watch.state) for r in self._running.values())
        for method in WatchMethod:
            for state in WatchState:
                CONNECTIONS.labels(method.value, state.value).set(counts[(method, state)])
            WATCHED.labels(method.value).set(counts[(method, WatchState.WATCHING)])

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeats until ``stop``; then every watch stops (its claims let go, its
        subscription kept for the next owner) and this process's reports are withdrawn."""
        interval = self._context.settings.watch_heartbeat_seconds
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set():
                await self.heartbeat()
        await self.hand_over(list(self._running))
        with contextlib.suppress(Exception):
            await self._context.run(self._context.repository.forget)
