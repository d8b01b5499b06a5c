"""The soak run: ``python -m bench.soak`` (``make soak``).

Mailboxes receive mail continuously while random faults hit the pipeline: processes killed,
stopped, paused past their lease; mail-server links cut; PostgreSQL stopped; the broker
restarted empty. Then the arrivals stop, the pipeline drains, and the run reports messages
in against messages stored, duplicates and losses (both must be 0), and the latency from
arrival to the committed row and to the published ``mail.stored`` event (connections poll
every minute; at the end every one is asked to poll now). Exit status 1 when anything was lost
or stored twice.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from tests.api import api_client
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline
from tests.harness.proxy import Fault, FaultProxy

from bench.env import BenchEnv, configure_bench_logging, percentile
from bench.measure import connection_body
from mailintake_shared.settings import Settings

OUT = Path(__file__).resolve().parents[1] / "bench-results"
FETCHERS = ("fetcher:1", "fetcher:2")


class _Loop:
    """A thread running ``_run`` until ``join`` sets ``stop``."""

    def __init__(self, name: str) -> None:
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


class Arrivals(_Loop):
    """Delivers one new message at a time to a random mailbox, at ``rate`` per second."""

    def __init__(self, env: BenchEnv, users: list[str], rate: float, rng: random.Random) -> None:
        super().__init__("arrivals")
        self._env, self._users, self._rate, self._rng = env, users, rate, rng
        self.sent: dict[str, datetime] = {}  # Message-ID → when it arrived

    def _run(self) -> None:
        index = 0
        while not self.stop.wait(self._rng.expovariate(self._rate)):
            size = self._rng.choice((2_000, 8_000, 8_000, 8_000, 60_000))
            message = make_message(1_000_000 + index, size=size)
            message_id = message.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
            self._env.dovecot.seed(self._rng.choice(self._users), [message])
            self.sent[message_id] = datetime.now(UTC)
            index += 1


class Faults(_Loop):
    """A random fault every ``every`` seconds (±50 %), each undone before the next one."""

    def __init__(
        self,
        env: BenchEnv,
        pipeline: Pipeline,
        proxy: FaultProxy,
        settings: Settings,
        every: float,
        rng: random.Random,
        only: list[str] | None = None,
    ) -> None:
        super().__init__("faults")
        self._env, self._pipeline, self._proxy = env, pipeline, proxy
        self._settings, self._every, self._rng = settings, every, rng
        self.injected: Counter[str] = Counter()
        self.log: list[str] = []  # when each fault began
        self._kinds: dict[str, Callable[[], None]] = {
            "fetcher killed (SIGKILL)": lambda: self._restart(self._fetcher(), kill=True),
            "fetcher stopped (SIGTERM)": lambda: self._restart(self._fetcher(), kill=False),
            "fetcher paused past its lease": self._pause_fetcher,
            "store killed (SIGKILL)": lambda: self._restart("store", kill=True),
            "scheduler killed (SIGKILL)": lambda: self._restart("scheduler", kill=True),
            "mail server links cut": self._cut_links,
            "PostgreSQL stopped for 10 s": self._stop_postgres,
            "broker restarted empty": self._restart_broker,
        }
        if only:  # the kinds whose name holds one of these words
            self._kinds = {k: f for k, f in self._kinds.items() if any(w in k for w in only)}
            if not self._kinds:
                raise SystemExit(f"no fault matches {only}")

    def _run(self) -> None:
        while not self.stop.wait(self._every * self._rng.uniform(0.5, 1.5)):
            kind = self._rng.choice(sorted(self._kinds))
            self.log.append(f"{time.strftime('%H:%M:%S')} {kind}")
            print(f"  {self.log[-1]}", flush=True)
            self._kinds[kind]()
            self.injected[kind] += 1

    def _fetcher(self) -> str:
        return self._rng.choice(FETCHERS)

    def _restart(self, service: str, *, kill: bool) -> None:
        if kill:
            self._pipeline.kill(service)
        else:
            self._pipeline.stop(service)
        self._pipeline.start(service)

    def _pause_fetcher(self) -> None:
        fetcher = self._fetcher()
        self._pipeline.pause(fetcher)
        time.sleep(self._settings.poll_lease_seconds + 5)
        self._pipeline.resume(fetcher)

    def _cut_links(self) -> None:
        self._proxy.plan(*(Fault(cut_after=self._rng.randint(2_000, 300_000)) for _ in range(5)))

    def _stop_postgres(self) -> None:
        self._env.postgres.stop("fast")
        time.sleep(10)
        self._env.postgres.start_server()

    def _restart_broker(self) -> None:
        self._env.broker.kill()
        self._env.broker.start()


def _report(
    arrivals: Arrivals, db: Database, faults: Faults, args: argparse.Namespace, drained_s: float
) -> dict[str, object]:
    rows = db.rows("SELECT message_id_header, stored_at, published_at FROM messages")
    stored_ids = [row[0] for row in rows]
    distinct = set(stored_ids)
    sent = arrivals.sent
    stored_latency = [(row[1] - sent[row[0]]).total_seconds() for row in rows if row[0] in sent]
    published_latency = [
        (row[2] - sent[row[0]]).total_seconds() for row in rows if row[0] in sent and row[2]
    ]
    first = min(sent.values()) if sent else None
    by_minute: dict[int, list[float]] = {}
    for row in rows:
        if row[0] in sent and first is not None:
            minute = int((sent[row[0]] - first).total_seconds() // 60)
            by_minute.setdefault(minute, []).append((row[1] - sent[row[0]]).total_seconds())
    return {
        "mailboxes": args.mailboxes,
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        "messages_in": len(sent),
        "messages_stored": len(stored_ids),
        "duplicates": len(stored_ids) - len(distinct),
        "lost": len(set(sent) - distinct),
        "unexpected": len(distinct - set(sent)),
        "unpublished": sum(1 for row in rows if row[2] is None),
        "drain_seconds": round(drained_s, 1),
        "faults": dict(faults.injected),
        "fault_log": faults.log,
        "latency_to_stored_s": {
            f"p{q}": round(percentile(stored_latency, q), 2) for q in (50, 90, 99, 100)
        },
        "latency_to_published_s": {
            f"p{q}": round(percentile(published_latency, q), 2) for q in (50, 90, 99, 100)
        },
        "latency_to_stored_by_arrival_minute": [
            {
                "minute": minute,
                "messages": len(values),
                "p50": round(percentile(values, 50), 1),
                "max": round(max(values), 1),
            }
            for minute, values in sorted(by_minute.items())
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long mail arrives")
    parser.add_argument("--rate", type=float, default=5.0, help="new messages per second")
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--faults",
        default="",
        help="comma-separated words: only the faults whose name holds one (killed,broker,…)",
    )
    args = parser.parse_args()
    configure_bench_logging()
    rng = random.Random(args.seed)
    started = time.monotonic()
    with BenchEnv() as env:
        proxy = FaultProxy(env.dovecot.ports.imap).start()
        settings = env.settings(
            poll_jitter_seconds=60.0,
            poll_timeout_seconds=60.0,
            poll_lease_seconds=10.0,
            connections_resync_seconds=20.0,
            retry_base_seconds=2.0,
            kafka_max_poll_interval_ms=30_000,
        )
        pipeline = Pipeline(settings, OUT / "logs" / "soak")
        pipeline.start("scheduler", "store", *FETCHERS)
        db = Database(settings.database_url)
        try:
            with api_client(settings) as api:
                users, ids = [], []
                for _ in range(args.mailboxes):
                    user, password = env.mailbox(0)
                    body = connection_body(env, user, password, port=proxy.port)
                    cid = api.post("/connections", json=body).json()["id"]
                    enabled = api.post(f"/connections/{cid}/enable", json={})
                    assert enabled.status_code == 200, enabled.text
                    users.append(user)
                    ids.append(cid)
                print(
                    f"soak: {args.mailboxes} mailboxes, {args.rate}/s for {args.minutes} min, "
                    f"a fault every ~{args.fault_every:.0f} s",
                    flush=True,
                )
                arrivals = Arrivals(env, users, args.rate, rng).start()
                faults = Faults(
                    env,
                    pipeline,
                    proxy,
                    settings,
                    args.fault_every,
                    rng,
                    [w.strip() for w in args.faults.split(",") if w.strip()],
                ).start()
                time.sleep(args.minutes * 60)
                arrivals.join()
                faults.join()
                drain_started = time.monotonic()
                print(f"arrivals stopped at {len(arrivals.sent)}; draining", flush=True)
                for cid in ids:  # rather than waiting for each connection's next interval
                    api.post(f"/connections/{cid}/poll")
                deadline = drain_started + 600
                while time.monotonic() < deadline:
                    if len(arrivals.sent) <= int(
                        db.scalar("SELECT count(DISTINCT message_id_header) FROM messages")
                    ):
                        break
                    time.sleep(2)
                time.sleep(5)  # anything late (a duplicate) would show now
                report = _report(arrivals, db, faults, args, time.monotonic() - drain_started)
        finally:
            pipeline.stop_all()
            db.close()
            proxy.stop()
    OUT.mkdir(exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {OUT / 'soak.json'} in {time.monotonic() - started:.0f}s")
    return 0 if report["duplicates"] == 0 and report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
