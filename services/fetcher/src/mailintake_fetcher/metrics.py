"""The fetcher's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

POLLS = Counter(
    "mailintake_fetcher_polls_total",
    "Polls run, by outcome and error kind.",
    ["outcome", "error_kind"],
)
POLL_SECONDS = Histogram(
    "mailintake_fetcher_poll_seconds",
    "Duration of a poll.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FETCHED_MESSAGES = Counter(
    "mailintake_fetcher_messages_total", "Messages downloaded (counted as each poll ends)."
)
FETCHED_BYTES = Counter(
    "mailintake_fetcher_bytes_total", "Bytes of mail downloaded (counted as each poll ends)."
)
UNFETCHED = Counter(
    "mailintake_fetcher_unfetched_total",
    "Messages a poll asked for that the server holds but did not deliver (tried again by the "
    "next polls, then set aside in the Incoming Mail Queue).",
)
