"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("mailintake_scheduler_connections", "Enabled connections this replica owns.")
EMITTED = Counter("mailintake_scheduler_polls_due_total", "poll.due events emitted.", ["reason"])
LATENESS = Histogram(
    "mailintake_scheduler_emit_seconds",
    "Time from a poll falling due to its event's ack.",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LATENESS_DUE = Histogram(
    "mailintake_scheduler_lateness_seconds",
    "Time from a poll falling due to its poll.due event being emitted.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 30),
)
STALLED = Gauge(
    "mailintake_scheduler_stalled_connections",
    "Connections without a successful poll for MAILINTAKE_STALLED_AFTER_SECONDS.",
)
