"""The watcher's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge(
    "mailintake_watcher_connections",
    "Connections this replica owns and would watch, by method and watch state.",
    ["method", "state"],
)
WATCHED = Gauge(
    "mailintake_watcher_watched_connections",
    "Connections whose server announces new mail to this replica now.",
    ["method"],
)
RECONNECTS = Counter(
    "mailintake_watcher_reconnects_total",
    "Watches that broke (or could not be set up) and are set up again after a back-off.",
    ["method"],
)
POLL_REQUESTS = Counter(
    "mailintake_watcher_poll_requests_total",
    "Polls asked for because the server announced new mail (push-triggered polls).",
    ["method"],
)
