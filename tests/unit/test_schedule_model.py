"""The schedule's time-ordered queues (the watchdog's and the polls in flight) against a
straightforward model that scans every connection, over random sequences of everything that
can happen to a connection: additions, changes, disables, deletions, re-additions, manual and
push requests, every outcome of a poll, late answers, continuations, retracted emits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mailintake_scheduler.schedule import Schedule, ScheduleConfig
from mailintake_shared.events import (
    ErrorKind,
    HealthState,
    PollCompleted,
    PollOutcome,
    PollReason,
    Resume,
)
from tests.harness.views import connection_view

CONFIG = ScheduleConfig(
    jitter_s=60, poll_timeout_s=600, retry_base_s=30, retry_max_s=3600, stalled_after_s=1800
)
IDS = [uuid.UUID(int=i + 1) for i in range(4)]
ACTIONS = [
    "add",
    "change",
    "disable",
    "delete",
    "manual",
    "push",
    "ok",
    "more",
    "fail",
    "skip",
    "auth",
    "late",
    "continue",
    "wait",
    "retract",
]


@dataclass
class Model:
    """What the schedule should know: per live connection, when its stall clock started and
    its poll in flight (id, when issued); which connections are reported stalled."""

    clock: dict[uuid.UUID, float] = field(default_factory=dict)
    flying: dict[uuid.UUID, tuple[uuid.UUID, float]] = field(default_factory=dict)
    answered: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)  # older polls
    versions: dict[uuid.UUID, int] = field(default_factory=dict)
    reported: set[uuid.UUID] = field(default_factory=set)
    recovering: set[uuid.UUID] = field(default_factory=set)  # to be reported recovered

    def drop(self, cid: uuid.UUID) -> None:
        self.clock.pop(cid, None)
        if cid in self.flying:
            self.answered.setdefault(cid, []).append(self.flying.pop(cid)[0])
        self.recover(cid)

    def recover(self, cid: uuid.UUID) -> None:
        if cid in self.reported:
            self.reported.discard(cid)
            self.recovering.add(cid)


def _completed(cid: uuid.UUID, poll_id: uuid.UUID, **fields: object) -> PollCompleted:
    values: dict[str, object] = {
        "connection_id": cid,
        "poll_id": poll_id,
        "outcome": PollOutcome.OK,
        "finished_at": datetime.now(UTC),
    }
    values.update(fields)
    return PollCompleted.model_validate(values)


def _issue(schedule: Schedule, model: Model, now: float, *, retract: bool) -> None:
    timed_out = {cid for cid, (_, at) in model.flying.items() if now - at >= CONFIG.poll_timeout_s}
    events = schedule.due(now)
    issued = {e.connection_id for e in events}
    assert len(issued) == len(events)  # never two polls of one connection
    assert not (issued & (set(model.flying) - timed_out))  # none while one is in flight
    assert issued <= set(model.clock)  # only live connections
    for cid in timed_out:  # a poll that never completed is issued again, at once
        assert cid in issued
        model.answered.setdefault(cid, []).append(model.flying.pop(cid)[0])
    if retract:
        schedule.retract(events, now)
        return
    for event in events:
        model.flying[event.connection_id] = (event.poll_id, now)


def _check_queues(schedule: Schedule) -> None:
    """Every queue holds exactly the connections it is meant to, in time order."""
    entries = schedule._entries
    flying = [c for c, e in entries.items() if e.in_flight is not None]
    assert sorted(schedule._flying) == sorted(flying)
    issued = [entries[c].issued_at for c in schedule._flying]
    assert issued == sorted(issued)
    watched = [c for c, e in entries.items() if not e.stalled]
    assert sorted(schedule._watched) == sorted(watched)
    started = [
        e.last_ok if e.last_ok is not None else e.added_at
        for e in (entries[c] for c in schedule._watched)
    ]
    assert started == sorted(started)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(ACTIONS),
            st.integers(0, len(IDS) - 1),  # which connection
            st.integers(0, 700),  # seconds since the step before
            st.sampled_from([1, 5, 60]),  # an interval, for additions and changes
        ),
        min_size=5,
        max_size=80,
    )
)
def test_the_queues_agree_with_a_scan_of_every_connection(
    steps: list[tuple[str, int, int, int]],
) -> None:
    schedule = Schedule(CONFIG)
    model = Model()
    now = 0.0
    for action, which, elapsed, interval in steps:
        now += elapsed
        cid = IDS[which]
        in_flight = model.flying.get(cid)
        if action in ("add", "change"):
            model.versions[cid] = model.versions.get(cid, 0) + (action == "change")
            view = connection_view(
                id=cid, enabled=True, interval_minutes=interval, version=model.versions[cid]
            )
            schedule.connection_changed(view, now)
            model.clock.setdefault(cid, now)
        elif action == "disable":
            model.versions[cid] = model.versions.get(cid, 0) + 1
            view = connection_view(id=cid, enabled=False, version=model.versions[cid])
            schedule.connection_changed(view, now)
            model.drop(cid)
        elif action == "delete":
            schedule.connection_removed(cid)
            model.drop(cid)
        elif action in ("manual", "push"):
            reason = PollReason.MANUAL if action == "manual" else PollReason.PUSH
            schedule.poll_requested(cid, now, reason)
        elif action in ("ok", "more", "fail", "skip", "auth") and in_flight is not None:
            outcome = {
                "fail": PollOutcome.FAILED,
                "auth": PollOutcome.FAILED,
                "skip": PollOutcome.SKIPPED,
            }.get(action, PollOutcome.OK)
            kind = {"fail": ErrorKind.TIMEOUT, "auth": ErrorKind.AUTHORIZATION_REQUIRED}
            extra: dict[str, object] = {"outcome": outcome, "more_pending": action == "more"}
            if action in kind:
                extra |= {"error_kind": kind[action], "consecutive_failures": 1}
            schedule.poll_completed(_completed(cid, in_flight[0], **extra), now)
            del model.flying[cid]
            if outcome is PollOutcome.OK:
                model.clock[cid] = now
                model.recover(cid)
        elif action == "late" and model.answered.get(cid):
            schedule.poll_completed(_completed(cid, model.answered[cid][-1]), now)  # ignored
        elif action == "continue" and in_flight is not None:
            resume = Resume(uidvalidity=1, last_uid=int(now))
            assert schedule.poll_requested(cid, now, after=in_flight[0], resume=resume)
            model.answered.setdefault(cid, []).append(model.flying.pop(cid)[0])
        _check_queues(schedule)
        _issue(schedule, model, now, retract=action == "retract")  # as the worker's tick
        _check_queues(schedule)

        changes = schedule.health_changes(now)
        stalled = {c.connection_id for c in changes if c.state is HealthState.STALLED}
        expected = {
            c
            for c, start in model.clock.items()
            if now - start >= CONFIG.stalled_after_s and c not in model.reported
        }
        assert stalled == expected
        assert [c.connection_id for c in changes if c.state is HealthState.RECOVERED] == list(
            model.recovering
        )
        model.recovering.clear()
        model.reported |= stalled
        assert schedule.stalled() == len(model.reported)
        assert len(schedule) == len(model.clock)
        assert set(schedule._watched) | set(schedule._flying) <= set(model.clock)
