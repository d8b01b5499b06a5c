"""The benchmark's machinery: real components, processes' CPU and memory, the results table."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from tests.conftest import ADMIN_TOKEN
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.postgres import PostgresCluster
from tests.harness.views import LOOPBACK_CIDRS

from mailintake_config_api.auth import hash_token
from mailintake_devstack.broker import LocalBroker
from mailintake_shared.db.migrate import upgrade
from mailintake_shared.kafka import ensure_topics, make_consumer
from mailintake_shared.logging import configure_logging
from mailintake_shared.secretbox import generate_key
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic

_TICKS = os.sysconf("SC_CLK_TCK")


def configure_bench_logging() -> None:
    """The in-process API and clients log like the services do: at ``BENCH_LOG_LEVEL``."""
    configure_logging(os.environ.get("BENCH_LOG_LEVEL", "WARNING"), service="bench")


def corpus(count: int, start: int = 0) -> Iterator[bytes]:
    """Median about 8 KB; every 50th message 200 KB (an attachment)."""
    for i in range(start, start + count):
        yield make_message(i, size=200_000 if i % 50 == 49 else 8192)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextmanager
def harness_heap_frozen() -> Iterator[None]:
    """While inside, the objects this process holds already (the harness's, and what earlier
    rows left) are out of the garbage collector's sight (``gc.freeze``): code measured in this
    process then pays for collecting its own objects only, as it would in its own service,
    not for a full collection of the benchmark's heap, which grows from row to row."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of process ``root`` and all its descendants, including those that
    exited and were reaped by their parent (``cutime``/``cstime``): a server's workers. Only
    this tree counts, not the other servers of the same kind on the machine."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(f) for f in fields[11:15]) / _TICKS
    total, stack = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


@dataclass
class Row:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        target: str = "",
        met: bool | None = None,
        note: str = "",
    ) -> None:
        self.rows.append(Row(name, value, unit, target, met, note))
        print(
            f"  {name:<58} {value:>12.3f} {unit:<8} {target} "
            f"{'' if met is None else ('met' if met else 'MISSED')} {note}",
            flush=True,
        )

    def table(self) -> str:
        lines = [
            "| measurement | value | unit | target | verdict | note |",
            "|---|---:|---|---|---|---|",
        ]
        for r in self.rows:
            verdict = "" if r.met is None else ("met" if r.met else "**missed**")
            lines.append(
                f"| {r.name} | {r.value:.3f} | {r.unit} | {r.target} | {verdict} | {r.note} |"
            )
        return "\n".join(lines)

    def write(self, directory: Path, quick: bool) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"bench-{'quick' if quick else 'full'}.json"
        path.write_text(
            json.dumps(
                {
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                    "quick": quick,
                    "rows": [r.__dict__ for r in self.rows],
                    "figures": self.figures,
                },
                indent=2,
                default=str,
            )
        )
        (directory / f"bench-{'quick' if quick else 'full'}.md").write_text(self.table() + "\n")
        return path


class BenchEnv:
    """Dovecot, PostgreSQL and the broker, started once for the whole benchmark."""

    def __init__(self) -> None:
        self.dovecot = Dovecot(connections_per_user=500)
        # PostgreSQL with its default durability (fsync, synchronous commit): the headline
        # figures are those of a database that keeps what it acknowledged.
        self.postgres = PostgresCluster(durable=True)
        self.broker = LocalBroker()

    def __enter__(self) -> BenchEnv:
        self.dovecot.start()
        self.postgres.start()
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.broker.stop()
        self.postgres.destroy()
        self.dovecot.destroy()

    def server_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the benchmark's own Dovecot, PostgreSQL and broker."""
        return {
            "dovecot": tree_cpu_seconds(self.dovecot.pid),
            "postgresql": tree_cpu_seconds(self.postgres.pid),
            "broker": tree_cpu_seconds(self.broker.pid),
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings on a fresh database and a fresh topic prefix."""
        name = self.postgres.create_database()
        url = self.postgres.url(name)
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        values: dict[str, Any] = {
            "database_url": url,
            "kafka_bootstrap_servers": self.broker.bootstrap_servers,
            "topic_prefix": f"b{uuid.uuid4().hex[:8]}.",
            "topic_partitions": 6,
            "encryption_keys": generate_key(),
            "api_tokens": f"admin:{hash_token(ADMIN_TOKEN)}",
            "kafka_session_timeout_ms": 3000,
            "kafka_max_poll_interval_ms": 8_000,
            "poll_max_seconds": 5.0,
            "poll_jitter_seconds": 0.0,
            "poll_timeout_seconds": 120.0,
            "log_level": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "outbound_allow_cidrs": LOOPBACK_CIDRS,
        }
        values.update(overrides)
        return Settings(**values)

    def mailbox(self, count: int, start: int = 0) -> tuple[str, str]:
        user, password = self.dovecot.add_user()
        if count:
            self.dovecot.seed(user, corpus(count, start))
        return user, password


class StoredClock:
    """When each message's ``mail.stored`` event came (``perf_counter``), by subject: a
    consumer of its own in a thread, until ``stop``."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.times: dict[str, float] = {}
        self._stop = threading.Event()
        ensure_topics(settings)  # a consumer of a missing topic sees it only minutes later
        self._settings, self._group = settings, group
        threading.Thread(target=self._consume, daemon=True).start()

    def _consume(self) -> None:
        consumer = make_consumer(self._settings, self._group, [Topic.MAIL_STORED])
        while not self._stop.is_set():
            for records in consumer.poll(timeout_ms=50).values():
                for record in records:
                    subject = json.loads(record.value)["headers"]["subject"]
                    self.times.setdefault(subject, time.perf_counter())
        consumer.close()

    def stop(self) -> None:
        self._stop.set()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
