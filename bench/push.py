"""Push: measurements 11 (arrival → ``mail.stored`` with the watcher, on many mailboxes) and
12 (what a watched mailbox costs the watcher while idle, with a thousand of them)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from tests.api import api_client
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline, wait_until

from bench.env import BenchEnv, Results, StoredClock, cpu_seconds, percentile, rss_mb
from bench.measure import connection_body
from mailintake_config_api.connections import republish_all
from mailintake_shared.kafka import ensure_topics
from mailintake_shared.settings import Settings

# Dovecot terminates TLS in its login processes, one per session by default: room for
# thousands of sessions (logins and mail processes).
_MANY_SESSIONS = """
default_process_limit = 5000
default_client_limit = 20000
service imap {
  process_limit = 5000
}
"""
_CHECK_EACH_SECOND = "mailbox_idle_check_interval = 1 secs\n"


def _answers(pipeline: Pipeline, path: str) -> bool:
    try:
        return pipeline.http_get("watcher", path) == 200
    except OSError:
        return False  # not listening yet


def _watching(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM connection_watches WHERE state = 'watching'"))


def _watched_connections(
    settings: Settings, bodies: list[dict[str, Any]], db: Database
) -> list[str]:
    """Create and enable the connections; return once every one is watched. The local
    broker now and then loses a record: the API's resync (every connection's state again,
    as it does every ``MAILINTAKE_CONNECTIONS_RESYNC_SECONDS``) heals the topic."""
    expected = _watching(db) + len(bodies)
    ids = []
    with api_client(settings) as api:
        for body in bodies:
            cid = api.post("/connections", json=body).json()["id"]
            api.post(f"/connections/{cid}/enable", json={"skip_estimate": True})
            ids.append(cid)
        resources = api.app.state.resources  # type: ignore[attr-defined]
        for _ in range(10):
            wait_until(lambda: db.scalar("SELECT count(*) FROM outbox") == 0, timeout_s=120)
            try:
                wait_until(lambda: _watching(db) == expected, timeout_s=60, interval_s=1)
                return ids
            except AssertionError:
                with resources.sessions() as session, session.begin():
                    republish_all(session, settings)
                resources.relay.wake.set()
    raise AssertionError(f"{len(ids)} connections not all watched")


# --- 11. latency with push -------------------------------------------------------------------
def push_latency(
    env: BenchEnv, results: Results, mailboxes: int, rate: float, seconds: float, logs: Path
) -> None:
    """Mail arrives at ``mailboxes`` watched mailboxes, ``rate`` messages a second for
    ``seconds``; each message's arrival (written into the maildir, as a delivery agent
    does) to its ``mail.stored`` event. The interval is an hour: every poll is a push.

    Dovecot tells an IDLE session about new mail through inotify; here every mailbox belongs
    to one system user, whose inotify instances the kernel caps (128 by default), and
    Dovecot checks the mailboxes beyond that every ``mailbox_idle_check_interval`` (30 s by
    default, 1 s for this server)."""
    server = Dovecot(connections_per_user=10, extra_config=_MANY_SESSIONS + _CHECK_EACH_SECOND)
    users = [server.add_user() for _ in range(mailboxes)]
    settings = env.settings(max_sessions_per_host=4 * mailboxes + 10, watch_heartbeat_seconds=5.0)
    ensure_topics(settings)
    pipeline = Pipeline(settings, logs / "push-latency")
    db = Database(settings.database_url)
    clock = StoredClock(settings, "bench-push")
    stored = clock.times
    try:
        server.start()
        pipeline.start("scheduler", "fetcher", "fetcher:2", "store", "watcher")
        bodies = [
            connection_body(env, user, password, interval_minutes=60, port=server.ports.imap)
            for user, password in users
        ]
        _watched_connections(settings, bodies, db)
        wait_until(
            lambda: db.scalar("SELECT count(*) FROM poll_log") >= mailboxes,
            timeout_s=300,
            message="every first poll done",
        )
        watcher_cpu = cpu_seconds(pipeline.processes["watcher"].pid)
        rng = random.Random(10)
        arrived: dict[str, float] = {}
        count = int(rate * seconds)
        for i in range(count):
            time.sleep(rng.expovariate(rate))
            user, _ = rng.choice(users)
            subject = f"push-{i}"
            arrived[subject] = time.perf_counter()
            server.seed(user, [make_message(i, subject=subject)])
        wait_until(lambda: all(s in stored for s in arrived), timeout_s=300, interval_s=0.2)
        watcher_cpu = cpu_seconds(pipeline.processes["watcher"].pid) - watcher_cpu
        push_polls = int(db.scalar("SELECT count(*) FROM poll_log WHERE reason = 'push'"))
    finally:
        clock.stop()
        pipeline.stop_all()
        db.close()
        server.destroy()
    latencies = [stored[s] - t for s, t in arrived.items()]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    note = f"{count} messages at {rate:g}/s; {push_polls} push-triggered polls"
    results.add(
        f"11. latency with push, {mailboxes} mailboxes, p50",
        p50,
        "s",
        target="≤ 2 s",
        met=p50 <= 2,
        note=note,
    )
    results.add(
        f"11. latency with push, {mailboxes} mailboxes, p99",
        p99,
        "s",
        target="≤ 5 s",
        met=p99 <= 5,
        note=f"watcher CPU {watcher_cpu:.1f} s while mail arrived",
    )
    results.figures["push_latency"] = latencies


# --- 12. watcher scale ------------------------------------------------------------------------
def watch_scale(
    env: BenchEnv, results: Results, connections: int, seconds: float, logs: Path
) -> None:
    """``connections`` mailboxes watched over TLS by one watcher. Its memory per watched
    mailbox: what its RSS grows by from a tenth of them watched to all of them (the first
    watches also pay for what any watch needs once: TLS and database clients, threads); its
    CPU per watched mailbox over ``seconds`` of quiet (IDLE renewals and heartbeats at their
    defaults)."""
    server = Dovecot(connections_per_user=10, extra_config=_MANY_SESSIONS).start()
    settings = env.settings(max_sessions_per_host=2 * connections + 10)
    ensure_topics(settings)
    pipeline = Pipeline(settings, logs / "watch-scale").start("watcher")
    db = Database(settings.database_url)
    try:
        pid = pipeline.processes["watcher"].pid
        wait_until(lambda: _answers(pipeline, "/readyz"), timeout_s=120, message="ready")
        time.sleep(10)  # joined its group, read the (empty) topic
        empty = rss_mb(pid)
        bodies = []
        for _ in range(connections):
            user, password = server.add_user()
            body = connection_body(env, user, password, interval_minutes=60)
            body.update(port=server.ports.imaps, encryption="ssl", tls_ca_pem=server.pki.ca_text)
            bodies.append(body)
        first = connections // 10
        _watched_connections(settings, bodies[:first], db)
        time.sleep(5)
        some = rss_mb(pid)
        started = time.perf_counter()
        _watched_connections(settings, bodies[first:], db)
        setup_s = time.perf_counter() - started
        time.sleep(10)
        after = rss_mb(pid)
        cpu = cpu_seconds(pid)
        time.sleep(seconds)
        cpu = cpu_seconds(pid) - cpu
        assert _watching(db) == connections
    finally:
        pipeline.stop_all()
        db.close()
        server.destroy()
    per_kb = (after - some) * 1024 / (connections - first)
    per_core = 100 * cpu / seconds / connections
    results.add(
        f"12. {connections} watched connections (TLS): watcher memory per mailbox",
        per_kb,
        "KB",
        target="≤ 50 KB",
        met=per_kb <= 50,
        note=f"RSS {empty:.0f} MB with none, {some:.0f} MB with {first}, {after:.0f} MB with all",
    )
    results.add(
        f"12. {connections} watched connections: watcher CPU per mailbox, idle",
        per_core,
        "% core",
        target="≤ 0.1 %",
        met=per_core <= 0.1,
        note=f"{cpu:.2f} CPU-s in {seconds:.0f} s for all; {connections - first} more watched "
        f"{setup_s:.0f} s after the API enabled them",
    )
    results.figures["watch_scale"] = {
        "rss_empty_mb": empty,
        "rss_tenth_mb": some,
        "rss_all_mb": after,
        "cpu_s": cpu,
        "seconds": seconds,
        "setup_s": setup_s,
    }
