"""The schedule as a pure function of (clock, connections, poll outcomes): no I/O here.
Times are seconds of a monotonic clock: ``now`` never goes back from one call to the next.

Rules:
- an enabled connection is due every ``interval_minutes``; its first poll falls at a stable
  offset within the jitter window (a hash of its id), so thousands of connections do not
  fire in the same second;
- never a second poll while one is in flight; one that has not completed after
  ``poll_timeout_s`` is issued again (reason ``retry``);
- a poll that stopped at its budget with more pending, or left committed messages waiting
  for their server action, is followed at once (``continuation``, ``actions``); an IMAP poll's
  next slice is asked for by the fetcher as soon as the slice is published, with where it
  left off (``resume``), so that the fetcher downloads the next slice while the store
  commits the last one — the slice's ``poll.completed`` then finds a newer poll in flight and
  changes nothing;
- a failed poll is retried after ``retry_base_s`` doubled per consecutive failure, capped
  by the interval; an authentication failure waits at least the interval and backs off up
  to ``retry_max_s`` (no retry storm against a server that refuses us); a throttled poll
  (``[LIMIT]``, ``[UNAVAILABLE]``, 429) backs off with jitter, past the interval if need be;
- a connection whose OAuth2 grant is gone (``authorization_required``) is parked: no polls
  until it changes (a new authorization bumps its version) or an operator asks for one; one
  that changes while it waits for a retry (a password put right) is retried at once;
- a poll a fetcher skipped (another one held the connection's lease) is tried again after
  ``retry_base_s``;
- a manual request is served at once, or right after the poll in flight; one for a connection
  whose state has not arrived yet (the scheduler, or the broker, has just started) waits for
  it, up to ``poll_timeout_s``, and is served as soon as the connection arrives enabled; so
  is a push request (the server announced new mail), which also counts as its own reason, but
  does not wake a parked connection (the watcher cannot know the grant is back), nor hurry the
  retry of a failed poll (a watch's session outlives a password change or throttling: each
  new message would be one more refused login);
- a disabled or deleted connection is dropped; an interval change applies from the next poll;
- the watchdog: a connection without a successful poll for ``stalled_after_s`` (or whose poll
  never completed, which is issued again) is reported stalled once, and recovered once a
  poll succeeds.
"""

from __future__ import annotations

import hashlib
import heapq
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailintake_shared.domain import ConnectionView
from mailintake_shared.events import (
    ErrorKind,
    HealthState,
    PollCompleted,
    PollDue,
    PollOutcome,
    PollReason,
    Resume,
)


@dataclass(frozen=True)
class ScheduleConfig:
    jitter_s: float
    poll_timeout_s: float
    retry_base_s: float
    retry_max_s: float
    stalled_after_s: float = 3600.0


@dataclass(frozen=True)
class HealthChange:
    connection_id: uuid.UUID
    state: HealthState
    reason: str
    since_success_s: float | None  # how long ago the last successful poll was; None: never


@dataclass
class _Entry:
    interval_s: float
    version: int
    next_due: float
    reason: PollReason = PollReason.SCHEDULED
    in_flight: uuid.UUID | None = None
    issued_at: float = 0.0
    resume: Resume | None = None  # the next poll continues a slice from here
    requested: PollReason | None = None  # manual or push, served after the poll in flight
    parked: bool = False  # authorization required: no polls until the connection changes
    added_at: float = 0.0
    last_ok: float | None = None  # when a poll last succeeded
    stalled: bool = False
    hung: bool = False  # its last poll never completed and was issued again


def stable_fraction(connection_id: uuid.UUID) -> float:
    """A number in [0, 1) fixed for a connection id (same on every replica and restart)."""
    digest = hashlib.blake2b(connection_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class Schedule:
    config: ScheduleConfig
    _entries: dict[uuid.UUID, _Entry] = field(default_factory=dict)
    _heap: list[tuple[float, uuid.UUID]] = field(default_factory=list)
    # connections with a poll in flight, in the order their polls were issued
    _flying: OrderedDict[uuid.UUID, None] = field(default_factory=OrderedDict)
    _health: list[HealthChange] = field(default_factory=list)
    # The watchdog's queue: every connection not reported stalled, oldest stall clock first
    # (last success, else when it was added). ``now`` never goes back, so a success moves its
    # connection to the end and the watchdog looks only at the front: O(1) a poll, not O(n).
    _watched: OrderedDict[uuid.UUID, None] = field(default_factory=OrderedDict)
    # requests (when, manual or push) before the connection's state arrived
    _waiting: dict[uuid.UUID, tuple[float, PollReason]] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._entries)

    def in_flight(self, connection_id: uuid.UUID) -> bool:
        entry = self._entries.get(connection_id)
        return entry is not None and entry.in_flight is not None

    def _set_due(
        self,
        connection_id: uuid.UUID,
        entry: _Entry,
        when: float,
        reason: PollReason,
        resume: Resume | None = None,
    ) -> None:
        entry.next_due, entry.reason, entry.resume = when, reason, resume
        heapq.heappush(self._heap, (when, connection_id))

    # --- inputs ----------------------------------------------------------------------------
    def connection_changed(self, view: ConnectionView, now: float) -> None:
        entry = self._entries.get(view.id)
        if not view.enabled:
            self.connection_removed(view.id)
            return
        interval_s = view.interval_minutes * 60.0
        if entry is None:
            entry = _Entry(interval_s=interval_s, version=view.version, next_due=0.0, added_at=now)
            self._entries[view.id] = entry
            self._watched[view.id] = None
            waiting = self._waiting.pop(view.id, None)
            if waiting is not None:
                self._set_due(view.id, entry, now, waiting[1])
            else:
                offset = stable_fraction(view.id) * min(self.config.jitter_s, interval_s)
                self._set_due(view.id, entry, now + offset, PollReason.SCHEDULED)
        elif view.version >= entry.version:
            changed = view.version > entry.version
            entry.interval_s, entry.version = interval_s, view.version
            if entry.parked and changed and entry.in_flight is None:
                entry.parked = False
                self._set_due(view.id, entry, now, PollReason.SCHEDULED)
            elif changed and entry.in_flight is None and entry.reason is PollReason.RETRY:
                self._set_due(view.id, entry, now, PollReason.RETRY)  # new settings: no back-off

    def connection_removed(self, connection_id: uuid.UUID) -> None:
        self._waiting.pop(connection_id, None)
        entry = self._entries.pop(connection_id, None)  # its heap entries are skipped
        self._flying.pop(connection_id, None)
        self._watched.pop(connection_id, None)
        if entry is not None and entry.stalled:  # no stale alarm left on the health topic
            self._health.append(
                HealthChange(connection_id, HealthState.RECOVERED, "no longer polled", None)
            )

    def poll_completed(self, event: PollCompleted, now: float) -> None:
        entry = self._entries.get(event.connection_id)
        if entry is None or entry.in_flight != event.poll_id:
            return  # a poll of a removed connection, or one already re-issued
        entry.in_flight, entry.hung = None, False
        self._flying.pop(event.connection_id, None)
        if event.outcome is PollOutcome.OK:
            if entry.stalled:
                entry.stalled = False
                self._health.append(
                    HealthChange(
                        event.connection_id, HealthState.RECOVERED, "a poll succeeded", 0.0
                    )
                )
            entry.last_ok = now
            self._watched[event.connection_id] = None
            self._watched.move_to_end(event.connection_id)
        requested, entry.requested = entry.requested, None
        if requested is PollReason.PUSH and event.outcome is PollOutcome.FAILED:
            requested = None  # the server's news waits for the retry: its back-off stands
        if event.error_kind is ErrorKind.AUTHORIZATION_REQUIRED:
            entry.parked = True  # nothing in the heap: it waits
        elif requested is not None:
            self._set_due(event.connection_id, entry, now, requested)
        elif event.outcome is PollOutcome.SKIPPED:  # another fetcher held it: soon, not at once
            when = now + min(self.config.retry_base_s, entry.interval_s)
            self._set_due(event.connection_id, entry, when, PollReason.RETRY)
        elif event.outcome is PollOutcome.FAILED:
            self._set_due(
                event.connection_id, entry, now + self._retry_delay(entry, event), PollReason.RETRY
            )
        elif event.more_pending:
            self._set_due(event.connection_id, entry, now, PollReason.CONTINUATION)
        elif event.actions_pending:
            self._set_due(event.connection_id, entry, now, PollReason.ACTIONS)
        else:
            when = max(now, entry.issued_at + entry.interval_s)
            self._set_due(event.connection_id, entry, when, PollReason.SCHEDULED)

    def _retry_delay(self, entry: _Entry, event: PollCompleted) -> float:
        failures = max(1, event.consecutive_failures)
        backoff = self.config.retry_base_s * float(2 ** (failures - 1))
        if event.error_kind is ErrorKind.THROTTLED:
            # The server asked for less: back off past the interval if need be, with jitter
            # (stable per connection and attempt) so that throttled connections spread out.
            jitter = 1.0 + 0.5 * stable_fraction(uuid.uuid5(event.connection_id, str(failures)))
            return min(backoff * jitter, self.config.retry_max_s)
        if event.error_kind is ErrorKind.AUTHENTICATION:
            return min(
                max(entry.interval_s, backoff), max(entry.interval_s, self.config.retry_max_s)
            )
        return min(backoff, entry.interval_s, self.config.retry_max_s)

    def poll_requested(
        self,
        connection_id: uuid.UUID,
        now: float,
        reason: PollReason = PollReason.MANUAL,
        *,
        after: uuid.UUID | None = None,
        resume: Resume | None = None,
    ) -> bool:
        """An operator's "poll now" (``manual``), the server's news (``push``), or a fetcher's
        continuation of poll ``after`` (its next slice, from ``resume``; ``reason`` is then
        unused). False if the connection's state has not arrived (yet): a manual or push
        request then waits for it; False too for a push to a parked connection. A push to a
        connection whose last poll failed is served by the retry, after its back-off."""
        entry = self._entries.get(connection_id)
        if entry is None:
            if after is None:  # an operator's request waiting already names the poll
                _, earlier = self._waiting.get(connection_id, (now, reason))
                manual = PollReason.MANUAL in (earlier, reason)
                self._waiting[connection_id] = (now, PollReason.MANUAL if manual else reason)
            return False
        if after is not None:
            if entry.in_flight == after:  # else the poll was re-issued meanwhile: stale
                entry.in_flight = None
                self._flying.pop(connection_id, None)
                self._set_due(connection_id, entry, now, PollReason.CONTINUATION, resume)
            return True
        if reason is PollReason.PUSH:
            if entry.parked:
                return False
            if entry.in_flight is None and entry.reason is PollReason.RETRY:
                return True  # served by the retry, after its back-off
        entry.parked = False
        if entry.in_flight is not None:
            if entry.requested is not PollReason.MANUAL:  # an operator's request names the poll
                entry.requested = reason
        else:
            self._set_due(connection_id, entry, now, reason)
        return True

    # --- the watchdog ------------------------------------------------------------------------
    def health_changes(self, now: float) -> list[HealthChange]:
        """Connections that stalled (no successful poll for ``stalled_after_s``, or a poll that
        never completed) or recovered since the last call; each reported once per change.
        Costs O(1 + changes): only the front of the watchdog's queue is looked at."""
        while self._watched:
            connection_id = next(iter(self._watched))
            entry = self._entries[connection_id]
            since = now - (entry.last_ok if entry.last_ok is not None else entry.added_at)
            if since < self.config.stalled_after_s:
                break  # every connection behind it had a success (or was added) later
            del self._watched[connection_id]  # back in the queue at its next success
            entry.stalled = True
            reason = (
                "a poll never completed (issued again)"
                if entry.hung
                else f"no successful poll for {int(since)} s"
            )
            ago = None if entry.last_ok is None else now - entry.last_ok
            self._health.append(HealthChange(connection_id, HealthState.STALLED, reason, ago))
        changes, self._health = self._health, []
        return changes

    def stalled(self) -> int:
        """How many connections are reported stalled now: those out of the watchdog's queue."""
        return len(self._entries) - len(self._watched)

    # --- output ----------------------------------------------------------------------------
    def due(self, now: float, wall_clock: datetime | None = None) -> list[PollDue]:
        """The poll-due events to emit at ``now``; they are in flight from here on.

        ``self.lateness`` then holds, per event, how long after its due time it was issued.
        """
        issued_at = wall_clock or datetime.now(UTC)
        events: list[PollDue] = []
        self.lateness: list[float] = []
        for connection_id, (asked, _) in list(self._waiting.items()):
            if now - asked >= self.config.poll_timeout_s:  # its connection never arrived
                del self._waiting[connection_id]
        while self._flying:  # the oldest first: only polls past their time-out are looked at
            connection_id = next(iter(self._flying))
            flying = self._entries[connection_id]
            if now - flying.issued_at < self.config.poll_timeout_s:
                break
            del self._flying[connection_id]
            flying.in_flight, flying.hung = None, True  # it never completed: again
            self._set_due(connection_id, flying, now, PollReason.RETRY)
        while self._heap and self._heap[0][0] <= now:
            when, connection_id = heapq.heappop(self._heap)
            entry = self._entries.get(connection_id)
            if entry is None or entry.in_flight is not None or when != entry.next_due:
                continue  # removed, busy, or superseded by a newer due time
            poll_id = uuid.uuid4()
            entry.in_flight, entry.issued_at = poll_id, now
            self._flying[connection_id] = None
            self.lateness.append(now - when)
            events.append(
                PollDue(
                    connection_id=connection_id,
                    poll_id=poll_id,
                    reason=entry.reason,
                    issued_at=issued_at,
                    resume=entry.resume,
                )
            )
            entry.resume = None
        return events

    def retract(self, events: list[PollDue], now: float) -> None:
        """These events never reached the broker: the polls are due again, not in flight."""
        for event in events:
            entry = self._entries.get(event.connection_id)
            if entry is not None and entry.in_flight == event.poll_id:
                entry.in_flight = None
                self._flying.pop(event.connection_id, None)
                self._set_due(event.connection_id, entry, now, event.reason, event.resume)
