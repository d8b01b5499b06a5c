"""Push on real Dovecot: the watcher idles on the folder and its news becomes a poll.

Every connection here is polled at an interval of an hour unless said otherwise, so a
message stored within the test came from a push (the poll's reason says so), not from the
interval; a dropped IDLE session falls back to interval polls and comes back; a server
without IDLE is polled as before; two watcher replicas never watch one connection at once;
the session budget holds with watching on. Against the tests' scripted server, what a hostile
one costs (and that it hears no secret back); and claims that stay apart however the
connections' ids hash.
"""

from __future__ import annotations

import itertools
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka.partitioner.default import murmur2
from sqlalchemy import create_engine

from mailintake_shared.db.session_budget import lock_key
from mailintake_shared.settings import Settings
from mailintake_watcher.claims import Claims
from tests.api import WITHOUT_ESTIMATE
from tests.conftest import Mailbox
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.planted import planted
from tests.harness.proxy import Fault, FaultProxy
from tests.harness.quirks import QuirkServer
from tests.integration.conftest import create_enabled, imap_session

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline_settings(pipeline_settings: Settings) -> Settings:
    """Watches set up, confirmed and retried in about a second; IDLE renewed every few
    seconds (DONE, then IDLE again), so every test here also goes through renewals."""
    return pipeline_settings.model_copy(
        update={
            "watch_idle_renew_seconds": 3.0,
            "watch_heartbeat_seconds": 1.0,
            "watch_reconnect_base_seconds": 0.5,
            "watch_reconnect_max_seconds": 2.0,
            "max_sessions_per_host": 100,
        }
    )


def watch_of(api: TestClient, connection_id: str) -> dict[str, Any]:
    watch: dict[str, Any] = api.get(f"/connections/{connection_id}").json()["watch"]
    return watch


def reasons_of_polls_that_stored(db: Database, subject: str) -> list[str]:
    return [
        row.reason
        for row in db.rows(
            "SELECT p.reason FROM messages m JOIN poll_log p ON p.poll_id = m.poll_id "
            "WHERE m.subject = :subject",
            subject=subject,
        )
    ]


def append(mailbox: Mailbox, subject: str) -> None:
    """APPEND, as a mail server's delivery would (Dovecot announces it to IDLE sessions)."""
    with imap_session(mailbox) as client:
        client.append("INBOX", make_message(hash(subject) % 10_000, subject=subject))


def metric(pipeline: Pipeline, service: str, name: str) -> float:
    url = f"http://127.0.0.1:{pipeline.ports[service]}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_mail_appended_while_watched_is_stored_without_waiting_for_the_interval(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    pipeline.start("scheduler", "fetcher", "store", "watcher")
    cid = create_enabled(api, mailbox, interval_minutes=60)
    wait_until(lambda: watch_of(api, cid)["watched"], timeout_s=90, message="watched")
    watch = watch_of(api, cid)
    assert (watch["state"], watch["method"], watch["reason"]) == ("watching", "imap_idle", None)
    assert watch["since"] is not None
    wait_until(lambda: db.scalar("SELECT count(*) FROM poll_log") == 1, timeout_s=60)
    # The first poll (of an empty folder) is done and the next is an hour away: only the
    # watch can bring this one in.
    append(mailbox, "pushed 0")
    wait_until(lambda: db.message_count() == 1, timeout_s=60, message="stored")
    assert reasons_of_polls_that_stored(db, "pushed 0") == ["push"]
    for i in range(1, 5):  # more, while the polls that follow the first are under way
        append(mailbox, f"pushed {i}")
    wait_until(lambda: db.message_count() == 5, timeout_s=60, message="all stored")
    reasons = [r.reason for r in db.rows("SELECT reason FROM poll_log")]
    # One first poll (the one enabling asks for, or the scheduler's): the interval never came.
    assert reasons.count("scheduled") + reasons.count("manual") == 1
    assert reasons.count("push") >= 1
    assert db.distinct_messages() == 5
    assert metric(pipeline, "watcher", "mailintake_watcher_watched_connections") == 1.0
    # Requests coalesce while one is pending or its poll runs: one may serve all five.
    assert metric(pipeline, "watcher", "mailintake_watcher_poll_requests_total") >= 1
    pipeline.assert_running()


def test_a_dropped_idle_session_falls_back_to_interval_polls_and_recovers(
    pipeline: Pipeline, api: TestClient, db: Database, mailbox: Mailbox
) -> None:
    proxy = FaultProxy(mailbox.server.ports.imap).start()
    try:
        pipeline.start("scheduler", "fetcher", "store", "watcher")
        cid = create_enabled(
            api, mailbox, port=proxy.port, encryption="none", tls_ca_pem=None, interval_minutes=1
        )
        wait_until(lambda: watch_of(api, cid)["watched"], timeout_s=90, message="watched")
        # The first poll (the one enabling asks for) is over: the next can only be the
        # interval's, or a push.
        wait_until(lambda: db.scalar("SELECT count(*) FROM poll_log") >= 1, timeout_s=60)
        first_since = watch_of(api, cid)["since"]
        # The link drops the idle session, and from now on every session that opens the
        # folder read-only (the watch's EXAMINE; polls SELECT): the watch stays down.
        proxy.default = Fault(cut_when_client_sends=b" EXAMINE ")
        proxy.cut_all()
        wait_until(lambda: watch_of(api, cid)["state"] == "retrying", timeout_s=30, message="down")
        assert watch_of(api, cid)["reason"].startswith("server_error")
        append(mailbox, "while down")
        wait_until(lambda: db.message_count() == 1, timeout_s=150, message="interval poll")
        assert reasons_of_polls_that_stored(db, "while down")[0] in ("scheduled", "retry")
        assert watch_of(api, cid)["state"] == "retrying"  # it was the interval, not a push
        assert metric(pipeline, "watcher", "mailintake_watcher_reconnects_total") >= 2

        proxy.default = Fault()  # the link heals
        wait_until(lambda: watch_of(api, cid)["watched"], timeout_s=30, message="back")
        assert watch_of(api, cid)["since"] > first_since
        append(mailbox, "after recovery")
        wait_until(lambda: db.message_count() == 2, timeout_s=60, message="pushed")
        assert reasons_of_polls_that_stored(db, "after recovery") == ["push"]
    finally:
        proxy.stop()
    assert db.message_count() == db.distinct_messages() == 2
    pipeline.assert_running()


def quirk_connection(api: TestClient, server: QuirkServer, name: str, **overrides: Any) -> str:
    """An enabled connection to the scripted server (plain IMAP, a 2 s time-out)."""
    created = api.post(
        "/connections",
        json={
            "name": name,
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": server.imap_port,
            "encryption": "none",
            "username": server.username,
            "password": server.password,
            "interval_minutes": 60,
            "timeout_ms": 2000,
            **overrides,
        },
    )
    assert created.status_code == 201, created.text
    cid: str = created.json()["id"]
    assert api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).status_code == 200
    return cid


def test_a_server_without_idle_is_polled_as_before(
    pipeline: Pipeline, api: TestClient, db: Database
) -> None:
    with QuirkServer() as server:
        server.imap.no_idle = True
        pipeline.start("scheduler", "fetcher", "store", "watcher")
        cid = quirk_connection(api, server, "no idle", interval_minutes=1)
        wait_until(
            lambda: watch_of(api, cid)["state"] == "unsupported", timeout_s=60, message="seen"
        )
        assert "IDLE" in watch_of(api, cid)["reason"]
        wait_until(lambda: db.scalar("SELECT count(*) FROM poll_log") >= 1, timeout_s=60)
        server.mailbox.append(make_message(1, subject="polled"))
        wait_until(lambda: db.message_count() == 1, timeout_s=150, message="interval poll")
        assert reasons_of_polls_that_stored(db, "polled") == ["scheduled"]
        assert not any(command.split()[1:2] == ["IDLE"] for command in server.commands)
    pipeline.assert_running()


@pytest.fixture
def proxies(dovecot: Dovecot) -> Iterator[list[FaultProxy]]:
    """One proxy per connection: the sessions open through it are that connection's."""
    running = [FaultProxy(dovecot.ports.imap).start() for _ in range(6)]
    yield running
    for proxy in running:
        proxy.stop()


def test_two_watcher_replicas_never_watch_one_connection_twice(
    pipeline_settings: Settings,
    api: TestClient,
    dovecot: Dovecot,
    proxies: list[FaultProxy],
    tmp_path: Path,
) -> None:
    """Only watchers run (no fetcher), so every session a proxy sees is a watch. Through
    a second replica joining, a replica that watches something paused past its group
    membership (its sockets and its database session stay open: the other one waits for
    them), then resumed (the group splits again), then the other one killed, no connection
    ever has two sessions open, and in the end each is watched exactly once."""
    first = Pipeline(pipeline_settings, tmp_path / "a").start("watcher")
    second = Pipeline(pipeline_settings, tmp_path / "b")
    ids = []
    for proxy in proxies:
        user, password = dovecot.add_user(password=uuid.uuid4().hex)
        created = api.post(
            "/connections",
            json={
                "name": f"watched {proxy.port}",
                "protocol": "imap",
                "host": "127.0.0.1",
                "port": proxy.port,
                "encryption": "none",
                "username": user,
                "password": password,
                "interval_minutes": 60,
            },
        )
        ids.append(created.json()["id"])
        assert api.post(f"/connections/{ids[-1]}/enable", json=WITHOUT_ESTIMATE).status_code == 200

    def watched_once() -> bool:
        return all(p.live == 1 for p in proxies) and all(
            watch_of(api, cid)["watched"] for cid in ids
        )

    try:
        wait_until(watched_once, timeout_s=90, message="all watched by the first replica")
        second.start("watcher")
        wait_until(
            lambda: (
                first.assigned() | second.assigned() == {0, 1, 2}
                and not first.assigned() & second.assigned()
                and bool(first.assigned())
                and bool(second.assigned())
            ),
            timeout_s=90,
            message="the group split between both replicas",
        )
        wait_until(watched_once, timeout_s=60, message="all watched after the rebalance")
        # The replica to pause is one that watches something now: the connections' keys may
        # all fall in the other one's partitions.
        partitions = {_partition(cid, pipeline_settings.topic_partitions) for cid in ids}
        held, other = (first, second) if first.assigned() & partitions else (second, first)
        held.pause("watcher")  # its membership lapses; its locks and sockets stay
        wait_until(lambda: other.assigned() == {0, 1, 2}, timeout_s=90, message="other took all")
        wait_until(
            lambda: any(watch_of(api, cid)["state"] == "waiting" for cid in ids),
            timeout_s=30,
            message="the other replica waits for what the paused one holds",
        )
        held.resume("watcher")  # it rejoins, and lets go of what it did not get back
        wait_until(
            lambda: (
                first.assigned() | second.assigned() == {0, 1, 2}
                and not first.assigned() & second.assigned()
            ),
            timeout_s=90,
            message="the group split again",
        )
        wait_until(watched_once, timeout_s=60, message="all watched after the pause")
        other.kill("watcher")  # its locks die with its database session
        wait_until(
            lambda: held.assigned() == {0, 1, 2}, timeout_s=90, message="the paused one took all"
        )
        wait_until(watched_once, timeout_s=60, message="all watched by one replica again")
    finally:
        first.stop_all()
        second.stop_all()
    assert [p.most_live for p in proxies] == [1] * len(proxies)
    assert any(p.sessions >= 2 for p in proxies)  # connections did change hands


def _partition(connection_id: str, partitions: int) -> int:
    """The partition of the connections topic that holds the connection (kafka-python's
    default partitioner: murmur2 of the key)."""
    return int(murmur2(connection_id.encode()) & 0x7FFFFFFF) % partitions


def test_the_session_budget_holds_with_watching_on(
    pipeline: Pipeline, api: TestClient, db: Database
) -> None:
    """A Dovecot that allows 2 sessions per user, a budget of 2 per account, three
    connections to one account polled by two fetchers over a slow link: one connection is
    watched (the upper half of the budget), the others wait, saying why; no poll ever hits
    the server's limit, and every message is stored."""
    strict = Dovecot(connections_per_user=2).start()
    slow = FaultProxy(strict.ports.imap, default=Fault(delay_per_read_s=0.02)).start()
    try:
        user, password = strict.add_user(password=uuid.uuid4().hex)
        strict.seed(user, (make_message(i, size=20_000) for i in range(60)))
        pipeline.start("scheduler", "fetcher", "fetcher:2", "store", "watcher")
        ids = []
        for i in range(3):
            created = api.post(
                "/connections",
                json={
                    "name": f"same account {i}",
                    "protocol": "imap",
                    "host": "127.0.0.1",
                    "port": slow.port,
                    "encryption": "none",
                    "username": user,
                    "password": password,
                    "interval_minutes": 1,
                },
            )
            ids.append(created.json()["id"])
        for cid in ids:
            assert api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).status_code == 200
        wait_until(lambda: db.message_count() == 180, timeout_s=300, message="all stored")

        def states() -> list[str]:
            return sorted(watch_of(api, cid)["state"] for cid in ids)

        # A poll may hold the upper slot for a moment: the watch takes it back after it.
        wait_until(lambda: states() == ["waiting", "waiting", "watching"], timeout_s=60)
        waiting = [watch_of(api, cid) for cid in ids if not watch_of(api, cid)["watched"]]
        assert all("MAILINTAKE_MAX_SESSIONS_PER_ACCOUNT=2" in w["reason"] for w in waiting)
        # Delivered into the maildir (a session of our own would count against the limit).
        strict.seed(user, [make_message(99, subject="pushed")])
        wait_until(lambda: db.message_count() == 183, timeout_s=150, message="new mail")
        server_log = strict.log
    finally:
        slow.stop()
        strict.destroy()
    failed = db.rows("SELECT error FROM poll_log WHERE outcome = 'failed'")
    assert failed == [], failed
    assert "Maximum number of connections" not in server_log
    pipeline.assert_running()


def idles(server: QuirkServer) -> int:
    return sum(command.split()[1:2] == ["IDLE"] for command in list(server.commands))


def test_hostile_idle_servers_cost_one_watch_each_and_leak_no_secret(
    pipeline: Pipeline, api: TestClient
) -> None:
    """The tests' scripted server, one connection per behaviour, only the watcher running:
    IDLE refused, never answered, answered with the password quoted back, ended by the server
    as soon as it began, or flooded with EXISTS. Each is reported for what it is; none spins
    the watcher's loop or floods the scheduler with requests; no secret reaches the API."""
    password = planted("password")
    behaviours: dict[str, dict[str, Any]] = {
        "refused": {"idle_answer": b"BAD"},
        "silent": {"idle_silent": True},
        "echo": {"idle_says": b"* BYE you sent " + password.encode() + b"\r\n"},
        "at once": {"idle_ends_at_once": True},
        "flood": {"idle_flood": True},
    }
    servers = {  # an account each: the account's session budget is not what is tried here
        name: QuirkServer(f"{name.replace(' ', '-')}@example.com", password).start()
        for name in behaviours
    }
    try:
        for name, quirks in behaviours.items():
            for quirk, value in quirks.items():
                setattr(servers[name].imap, quirk, value)
        ids = {name: quirk_connection(api, server, name) for name, server in servers.items()}
        pipeline.start("watcher")

        def state(name: str) -> str:
            return str(watch_of(api, ids[name])["state"])

        wait_until(lambda: state("refused") == "unsupported", timeout_s=60, message="refused")
        assert "BAD" in watch_of(api, ids["refused"])["reason"]
        wait_until(lambda: state("silent") == "retrying", timeout_s=60, message="silent")
        assert watch_of(api, ids["silent"])["reason"].startswith("timeout")
        wait_until(lambda: state("echo") == "retrying", timeout_s=60, message="echo")
        assert password not in watch_of(api, ids["echo"])["reason"]
        assert "[secret]" in watch_of(api, ids["echo"])["reason"]
        wait_until(lambda: state("at once") == state("flood") == "watching", timeout_s=60)

        start, rounds = time.monotonic(), idles(servers["at once"])
        requests = metric(pipeline, "watcher", "mailintake_watcher_poll_requests_total")
        time.sleep(5)
        rounds = idles(servers["at once"]) - rounds
        requests = metric(pipeline, "watcher", "mailintake_watcher_poll_requests_total") - requests
        elapsed = time.monotonic() - start
        # Upper bounds only: a slower machine makes fewer, never more.
        assert rounds <= elapsed + 2, f"{rounds} IDLE rounds in {elapsed:.1f} s"
        assert requests <= elapsed + 2, f"{requests} poll requests in {elapsed:.1f} s"
        assert state("at once") == state("flood") == "watching"
    finally:
        for server in servers.values():
            server.stop()
    pipeline.assert_running()


def _colliding_connection_ids() -> tuple[uuid.UUID, uuid.UUID]:
    """Two connection ids whose claims shared one 32-bit lock key: among 10,000 watched
    connections, a pair does with a chance of 1 in 86 (the birthday bound)."""
    seen: dict[int, uuid.UUID] = {}
    for n in itertools.count():
        connection_id = uuid.UUID(int=n)
        key = lock_key(f"watch:{connection_id}")
        if key in seen:
            return seen[key], connection_id
        seen[key] = connection_id
    raise AssertionError("unreachable")


def test_connections_are_claimed_apart_however_their_ids_hash(database_url: str) -> None:
    """One replica, then another, claims two connections (with no session of a budget)."""
    first, second = _colliding_connection_ids()
    engine = create_engine(database_url)
    here, there = Claims(engine, 20, 2), Claims(engine, 20, 2)
    try:
        assert here.take(first, None) is None
        assert there.take(second, None) is None, "refused: nobody watches it"
        here.release(first)
        there.release(second)
        assert here.take(first, None) is None
        assert here.take(second, None) is None, "refused by a claim of the same process"
        assert there.take(first, None) is not None  # the claim itself still holds
    finally:
        here.close()
        there.close()
        engine.dispose()
