"""The schedule as a pure function: advance a fake clock and check the exact events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailintake_scheduler.schedule import Schedule, ScheduleConfig, stable_fraction
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
from tests.harness.views import connection_view

CONFIG = ScheduleConfig(jitter_s=60, poll_timeout_s=600, retry_base_s=30, retry_max_s=3600)


def view(
    cid: uuid.UUID | None = None, *, enabled: bool = True, interval: int = 5, version: int = 1
) -> ConnectionView:
    return connection_view(
        id=cid or uuid.uuid4(), enabled=enabled, interval_minutes=interval, version=version
    )


def completed(due: PollDue, **fields: object) -> PollCompleted:
    values: dict[str, object] = {
        "connection_id": due.connection_id,
        "poll_id": due.poll_id,
        "outcome": PollOutcome.OK,
        "finished_at": datetime.now(UTC),
    }
    values.update(fields)
    return PollCompleted.model_validate(values)


def first_poll(schedule: Schedule, v: ConnectionView, start: float = 0.0) -> PollDue:
    schedule.connection_changed(v, start)
    offset = stable_fraction(v.id) * min(CONFIG.jitter_s, v.interval_minutes * 60)
    assert schedule.due(start + offset - 0.001) == []
    (due,) = schedule.due(start + offset)
    assert due.reason is PollReason.SCHEDULED
    return due


def test_first_polls_are_spread_by_a_stable_per_connection_offset() -> None:
    schedule = Schedule(CONFIG)
    views = [view() for _ in range(1000)]
    for v in views:
        schedule.connection_changed(v, 0.0)
    per_second = [len(schedule.due(float(t))) for t in range(0, 61)]
    assert sum(per_second) == 1000
    assert max(per_second) < 60  # about 1000 / 60 a second, never all at once
    assert stable_fraction(views[0].id) == stable_fraction(views[0].id)


def test_every_interval_and_never_twice_while_in_flight() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=5)
    due = first_poll(schedule, v)
    t0 = stable_fraction(v.id) * 60
    assert schedule.due(t0 + 299) == []  # in flight: nothing more, however long
    schedule.poll_completed(completed(due), t0 + 10)
    assert schedule.due(t0 + 299) == []
    (second,) = schedule.due(t0 + 300)
    assert second.reason is PollReason.SCHEDULED
    assert second.poll_id != due.poll_id


def test_a_poll_that_never_completes_is_issued_again_after_the_timeout() -> None:
    schedule = Schedule(CONFIG)
    due = first_poll(schedule, view())
    t0 = stable_fraction(due.connection_id) * 60
    assert schedule.due(t0 + 599) == []
    (again,) = schedule.due(t0 + 600)
    assert again.reason is PollReason.RETRY
    schedule.poll_completed(completed(due), t0 + 601)  # the old one, late: ignored
    assert schedule.in_flight(due.connection_id)


def test_continuation_actions_and_manual_polls_come_at_once() -> None:
    schedule = Schedule(CONFIG)
    due = first_poll(schedule, view())
    now = 100.0
    schedule.poll_completed(completed(due, more_pending=True), now)
    (cont,) = schedule.due(now)
    assert cont.reason is PollReason.CONTINUATION
    schedule.poll_completed(completed(cont, actions_pending=12), now + 1)
    (actions,) = schedule.due(now + 1)
    assert actions.reason is PollReason.ACTIONS
    assert schedule.poll_requested(due.connection_id, now + 2)  # while in flight: deferred
    assert schedule.due(now + 2) == []
    schedule.poll_completed(completed(actions), now + 3)
    (manual,) = schedule.due(now + 3)
    assert manual.reason is PollReason.MANUAL
    assert not schedule.poll_requested(uuid.uuid4(), now)  # unknown connection


def test_failures_back_off_and_authentication_failures_do_not_storm() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=10)
    due = first_poll(schedule, v)
    now = 1000.0
    delays = []
    for failures in range(1, 6):
        schedule.poll_completed(
            completed(
                due,
                outcome=PollOutcome.FAILED,
                error_kind=ErrorKind.TIMEOUT,
                consecutive_failures=failures,
            ),
            now,
        )
        step = 0.0
        while not (events := schedule.due(now + step)):
            step += 1
        (due,) = events
        assert due.reason is PollReason.RETRY
        delays.append(step)
        now += step
    assert delays == [30, 60, 120, 240, 480]  # doubling, never beyond 600 (the interval)
    schedule.poll_completed(
        completed(
            due,
            outcome=PollOutcome.FAILED,
            error_kind=ErrorKind.AUTHENTICATION,
            consecutive_failures=9,
        ),
        now,
    )
    assert schedule.due(now + 3599) == []  # at least the interval; here capped at 1 hour
    assert len(schedule.due(now + 3600)) == 1


def test_disable_delete_and_interval_change() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=5)
    due = first_poll(schedule, v)
    t = 100.0
    schedule.connection_changed(view(v.id, interval=1, version=2), t)
    schedule.poll_completed(completed(due), t)
    (next_due,) = schedule.due(due_time := max(t, stable_fraction(v.id) * 60 + 60))
    assert next_due.reason is PollReason.SCHEDULED
    assert due_time <= t + 60
    schedule.connection_changed(view(v.id, enabled=False, version=3), t + 1)
    schedule.poll_completed(completed(next_due), t + 2)
    assert schedule.due(t + 10_000) == []
    assert len(schedule) == 0
    schedule.connection_changed(view(v.id, version=4), t + 3)
    schedule.connection_removed(v.id)
    assert schedule.due(t + 10_000) == []


def test_retracted_events_are_due_again() -> None:
    schedule = Schedule(CONFIG)
    due = first_poll(schedule, view())
    schedule.retract([due], 200.0)
    (again,) = schedule.due(200.0)
    assert again.reason is due.reason


def test_authorization_required_parks_the_connection_until_it_changes() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=1)
    due = first_poll(schedule, v)
    refused = completed(
        due,
        outcome=PollOutcome.FAILED,
        error_kind=ErrorKind.AUTHORIZATION_REQUIRED,
        consecutive_failures=1,
    )
    schedule.poll_completed(refused, 100.0)
    assert schedule.due(100.0 + 10 * 86400) == []  # not even after days: no retry storm
    schedule.connection_changed(v, 200.0)  # the same version again (a resync): still parked
    assert schedule.due(86400 * 20) == []
    reauthorized = v.model_copy(update={"version": v.version + 1})
    schedule.connection_changed(reauthorized, 86400 * 20)
    (again,) = schedule.due(86400 * 20)
    assert again.connection_id == v.id


def test_a_manual_poll_unparks_a_connection_and_a_push_does_not() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=1)
    due = first_poll(schedule, v)
    refused = completed(
        due, outcome=PollOutcome.FAILED, error_kind=ErrorKind.AUTHORIZATION_REQUIRED
    )
    schedule.poll_completed(refused, 100.0)
    assert not schedule.poll_requested(v.id, 120.0, PollReason.PUSH)
    assert schedule.due(140.0) == []
    assert schedule.poll_requested(v.id, 150.0)
    (manual,) = schedule.due(150.0)
    assert manual.reason is PollReason.MANUAL


def test_throttled_polls_back_off_with_jitter_past_the_interval() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=1)  # 60 s
    due = first_poll(schedule, v)
    now, delays = 100.0, []
    for failures in range(1, 6):
        throttled = completed(
            due,
            outcome=PollOutcome.FAILED,
            error_kind=ErrorKind.THROTTLED,
            consecutive_failures=failures,
        )
        schedule.poll_completed(throttled, now)
        step = 0.0
        while not (events := schedule.due(now + step)):
            step += 1
        (due,) = events
        delays.append(step)
        now += step
    for failures, delay in enumerate(delays, start=1):
        base = 30 * 2 ** (failures - 1)
        assert base <= delay <= min(base * 1.5 + 1, 3600)
    assert delays[-1] > 60  # a failure of another kind stops at the interval
    other = view(interval=1)
    assert stable_fraction(other.id) != stable_fraction(v.id)  # each connection its own jitter


WATCHED = ScheduleConfig(
    jitter_s=60, poll_timeout_s=600, retry_base_s=30, retry_max_s=3600, stalled_after_s=1800
)


def test_the_watchdog_reports_a_stall_once_and_the_recovery_once() -> None:
    schedule = Schedule(WATCHED)
    v = view(interval=5)
    due = first_poll(schedule, v)
    now = 100.0
    schedule.poll_completed(completed(due), now)  # one success at t=100
    failures = 0
    while now < 100 + 1800 + 600:
        now += 1
        for due in schedule.due(now):
            failures += 1
            failed = completed(
                due,
                outcome=PollOutcome.FAILED,
                error_kind=ErrorKind.TIMEOUT,
                consecutive_failures=failures,
            )
            schedule.poll_completed(failed, now)
        changes = schedule.health_changes(now)
        if now < 100 + 1800:
            assert changes == []
        elif now == 100 + 1800:
            (change,) = changes
            assert change.state is HealthState.STALLED
            assert change.reason == "no successful poll for 1800 s"
            assert change.since_success_s == 1800
        else:
            assert changes == []  # once, not on every tick
    assert schedule.stalled() == 1
    while not (events := schedule.due(now)):
        now += 1
    schedule.poll_completed(completed(events[0]), now)
    (recovered,) = schedule.health_changes(now)
    assert recovered.state is HealthState.RECOVERED
    assert schedule.stalled() == 0


def test_a_poll_that_never_completes_is_issued_again_and_reported() -> None:
    config = ScheduleConfig(
        jitter_s=60, poll_timeout_s=600, retry_base_s=30, retry_max_s=3600, stalled_after_s=900
    )
    schedule = Schedule(config)
    v = view(interval=60)
    first_poll(schedule, v)  # in flight, never answered
    start = stable_fraction(v.id) * 60
    (again,) = schedule.due(start + 600)
    assert again.reason is PollReason.RETRY
    assert schedule.health_changes(899.0) == []  # the connection was added at 0
    (stalled,) = schedule.health_changes(900.0)
    assert stalled.reason == "a poll never completed (issued again)"
    assert stalled.since_success_s is None


def test_a_stalled_connection_that_is_disabled_leaves_no_alarm_behind() -> None:
    schedule = Schedule(WATCHED)
    v = view(interval=60)
    first_poll(schedule, v)
    (stalled,) = schedule.health_changes(1800.0)
    assert stalled.state is HealthState.STALLED
    schedule.connection_changed(v.model_copy(update={"enabled": False}), 1801.0)
    (cleared,) = schedule.health_changes(1801.0)
    assert (cleared.connection_id, cleared.state) == (v.id, HealthState.RECOVERED)
    assert schedule.stalled() == 0


def test_push_requests_poll_at_once_or_right_after_the_poll_in_flight() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=60)  # an hour: a poll within the test can only come from push
    due = first_poll(schedule, v)
    assert schedule.poll_requested(v.id, 10.0, PollReason.PUSH)  # in flight: served after it
    assert schedule.poll_requested(v.id, 11.0, PollReason.PUSH)  # announcements coalesce
    assert schedule.due(12.0) == []
    schedule.poll_completed(completed(due), 20.0)
    (pushed,) = schedule.due(20.0)
    assert pushed.reason is PollReason.PUSH
    schedule.poll_completed(completed(pushed), 21.0)
    assert schedule.due(22.0) == []  # one poll served both announcements
    assert schedule.poll_requested(v.id, 30.0, PollReason.PUSH)  # idle: at once
    (again,) = schedule.due(30.0)
    assert again.reason is PollReason.PUSH
    schedule.poll_completed(completed(again), 31.0)
    assert schedule.due(3629.0) == []
    (scheduled,) = schedule.due(3630.0)  # an hour after the last poll was issued
    assert scheduled.reason is PollReason.SCHEDULED  # the interval poll stays the safety net


@pytest.mark.parametrize("kind", [ErrorKind.AUTHENTICATION, ErrorKind.THROTTLED])
def test_a_push_does_not_hurry_the_retry_of_a_poll_the_server_refused(kind: ErrorKind) -> None:
    """A watch's session stays logged in after the password changed, or while the server
    throttles new sessions: each new message would otherwise be one more refused login (an
    account lock-out, at many providers). The retry's back-off stands."""
    schedule = Schedule(CONFIG)
    v = view(interval=60)
    due = first_poll(schedule, v)
    assert schedule.poll_requested(v.id, 10.0, PollReason.PUSH)  # while the poll is in flight
    failed = completed(due, outcome=PollOutcome.FAILED, error_kind=kind, consecutive_failures=1)
    schedule.poll_completed(failed, 20.0)
    issued: list[tuple[int, PollReason]] = []
    for t in range(21, 4000):  # mail keeps arriving, announced every second
        schedule.poll_requested(v.id, float(t), PollReason.PUSH)
        issued += [(t, event.reason) for event in schedule.due(float(t))]
        if issued:
            break
    ((when, reason),) = issued
    assert reason is PollReason.RETRY
    assert when >= 20 + CONFIG.retry_base_s


def test_a_connection_changed_while_it_waits_for_a_retry_is_retried_at_once() -> None:
    """The password was refused and the retry waits an hour; the operator puts it right (a
    new version of the connection): the retry comes at once, and serves the watch's push."""
    schedule = Schedule(CONFIG)
    v = view(interval=60)
    due = first_poll(schedule, v)
    failed = completed(
        due,
        outcome=PollOutcome.FAILED,
        error_kind=ErrorKind.AUTHENTICATION,
        consecutive_failures=1,
    )
    schedule.poll_completed(failed, 20.0)
    schedule.connection_changed(view(v.id, interval=60), 30.0)  # the same version again
    assert schedule.poll_requested(v.id, 31.0, PollReason.PUSH)
    assert schedule.due(40.0) == []
    schedule.connection_changed(view(v.id, interval=60, version=2), 50.0)
    (retry,) = schedule.due(50.0)
    assert retry.reason is PollReason.RETRY


def test_an_operators_request_in_flight_is_not_renamed_by_a_push() -> None:
    schedule = Schedule(CONFIG)
    v = view()
    due = first_poll(schedule, v)
    assert schedule.poll_requested(v.id, 10.0)  # manual, deferred
    assert schedule.poll_requested(v.id, 11.0, PollReason.PUSH)
    schedule.poll_completed(completed(due), 12.0)
    (next_poll,) = schedule.due(12.0)
    assert next_poll.reason is PollReason.MANUAL


def test_a_fetchers_continuation_issues_the_next_slice_before_the_store_commits() -> None:
    schedule = Schedule(CONFIG)
    due = first_poll(schedule, view())
    t0 = stable_fraction(due.connection_id) * 60
    resume = Resume(uidvalidity=7, last_uid=5000, baseline_uid=None)
    assert schedule.poll_requested(due.connection_id, t0 + 2, after=due.poll_id, resume=resume)
    (following,) = schedule.due(t0 + 2)
    assert (following.reason, following.resume) == (PollReason.CONTINUATION, resume)
    # The store's poll.completed of the first slice comes later and changes nothing.
    schedule.poll_completed(completed(due, more_pending=True), t0 + 3)
    assert schedule.due(t0 + 3) == []
    assert schedule.in_flight(due.connection_id)
    # The last slice's completion is the one that counts; the next is a plain poll.
    schedule.poll_completed(completed(following), t0 + 4)
    (later,) = schedule.due(t0 + 2 + 300)  # an interval after the last slice was issued
    assert (later.reason, later.resume) == (PollReason.SCHEDULED, None)


def test_a_continuation_of_a_poll_no_longer_in_flight_is_dropped() -> None:
    schedule = Schedule(CONFIG)
    due = first_poll(schedule, view())
    t0 = stable_fraction(due.connection_id) * 60
    schedule.poll_completed(completed(due, more_pending=True), t0 + 1)  # the store was first
    (following,) = schedule.due(t0 + 1)
    assert following.resume is None  # from the stored cursor
    resume = Resume(uidvalidity=7, last_uid=5000)
    assert schedule.poll_requested(due.connection_id, t0 + 2, after=due.poll_id, resume=resume)
    assert schedule.due(t0 + 2) == []  # no second poll while the first continuation flies


def test_a_poll_request_before_its_connection_is_served_when_the_connection_arrives() -> None:
    """After a restart the scheduler may read "poll now" before the connection's state."""
    schedule = Schedule(CONFIG)
    early, disabled, never = view(), view(), view()
    for v in (early, disabled, never):
        assert schedule.poll_requested(v.id, 10.0) is False  # not known: it waits
    assert schedule.due(11.0) == []
    schedule.connection_changed(early, 20.0)
    schedule.connection_changed(disabled.model_copy(update={"enabled": False}), 20.0)
    (due,) = schedule.due(20.0)  # at once, not after the jitter
    assert (due.connection_id, due.reason) == (early.id, PollReason.MANUAL)
    schedule.connection_changed(disabled, 21.0)  # enabled later: the request was dropped
    assert schedule.due(21.0) == []
    schedule.due(10.0 + CONFIG.poll_timeout_s)  # the third never arrived: forgotten
    schedule.connection_changed(never, 10.0 + CONFIG.poll_timeout_s)
    assert schedule.due(10.0 + CONFIG.poll_timeout_s) == []


def test_a_push_before_its_connection_is_served_as_a_push_and_an_operators_request_wins() -> None:
    schedule = Schedule(CONFIG)
    pushed, both = view(), view()
    assert schedule.poll_requested(pushed.id, 10.0, PollReason.PUSH) is False  # it waits
    assert schedule.poll_requested(both.id, 10.0) is False
    assert schedule.poll_requested(both.id, 11.0, PollReason.PUSH) is False
    schedule.connection_changed(pushed, 20.0)
    schedule.connection_changed(both, 20.0)
    reasons = {due.connection_id: due.reason for due in schedule.due(20.0)}
    assert reasons == {pushed.id: PollReason.PUSH, both.id: PollReason.MANUAL}


def test_a_push_during_a_pipelined_slice_is_served_after_the_continuation() -> None:
    schedule = Schedule(CONFIG)
    v = view(interval=60)
    due = first_poll(schedule, v)
    t0 = stable_fraction(v.id) * 60
    assert schedule.poll_requested(v.id, t0 + 1, PollReason.PUSH)  # a slice is in flight
    resume = Resume(uidvalidity=7, last_uid=5000)
    assert schedule.poll_requested(v.id, t0 + 2, after=due.poll_id, resume=resume)
    (following,) = schedule.due(t0 + 2)
    assert (following.reason, following.resume) == (PollReason.CONTINUATION, resume)
    schedule.poll_completed(completed(due, more_pending=True), t0 + 3)  # stale: nothing
    assert schedule.due(t0 + 3) == []
    schedule.poll_completed(completed(following), t0 + 4)
    (pushed,) = schedule.due(t0 + 4)
    assert (pushed.reason, pushed.resume) == (PollReason.PUSH, None)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "poll", "remove", "watch"]),
            st.integers(0, 5),  # which connection
            st.integers(1, 700),  # seconds since the step before
        ),
        max_size=60,
    )
)
def test_the_watchdog_finds_what_a_scan_of_every_connection_finds(
    steps: list[tuple[str, int, int]],
) -> None:
    """The watchdog looks only at the front of its queue; whatever the order of additions,
    polls (each one ends in a success or a failure), removals and watchdog passes, it reports
    exactly the connections a scan of all of them finds stalled, once each."""
    schedule = Schedule(WATCHED)
    ids = [uuid.UUID(int=i + 1) for i in range(6)]
    since: dict[uuid.UUID, float] = {}  # the model: when each live connection's clock started
    reported: set[uuid.UUID] = set()
    now = 0.0
    for action, which, elapsed in steps:
        now += elapsed
        cid = ids[which]
        if action == "add" and cid not in since:
            schedule.connection_changed(view(cid, interval=60), now)
            since[cid] = now
        elif action == "remove" and cid in since:
            schedule.connection_changed(view(cid, enabled=False, interval=60), now)
            del since[cid]
            reported.discard(cid)
        elif action == "poll" and cid in since:
            assert schedule.poll_requested(cid, now)
            polled = set()
            for due in schedule.due(now):  # others may be due too: theirs fail
                polled.add(due.connection_id)
                ok = due.connection_id == cid
                outcome = PollOutcome.OK if ok else PollOutcome.FAILED
                schedule.poll_completed(completed(due, outcome=outcome), now)
            assert cid in polled
            since[cid] = now
            reported.discard(cid)
        changes = schedule.health_changes(now)
        stalled = {c.connection_id for c in changes if c.state is HealthState.STALLED}
        expected = {c for c, start in since.items() if now - start >= 1800 and c not in reported}
        assert stalled == expected
        reported |= stalled
        assert schedule.stalled() == len(reported)


def test_polls_past_their_time_out_are_issued_again_oldest_first_and_only_they() -> None:
    schedule = Schedule(CONFIG)  # poll_timeout_s=600
    views = [view(interval=60) for _ in range(3)]
    issued: dict[uuid.UUID, PollDue] = {}
    for at, v in zip((0.0, 10.0, 20.0), views, strict=True):
        schedule.connection_changed(v, at)
        schedule.poll_requested(v.id, at)
        (issued[v.id],) = schedule.due(at)
    schedule.poll_completed(completed(issued[views[0].id]), 30.0)  # the oldest one answered
    assert schedule.due(609.0) == []
    (again,) = schedule.due(610.0)
    assert (again.connection_id, again.reason) == (views[1].id, PollReason.RETRY)
    assert schedule.due(619.0) == []
    (again,) = schedule.due(620.0)
    assert (again.connection_id, again.reason) == (views[2].id, PollReason.RETRY)
    late = issued[views[1].id]  # the first poll of the re-issued one, answered too late
    schedule.poll_completed(completed(late), 621.0)
    assert schedule.in_flight(views[1].id)  # the retry is still the one in flight
