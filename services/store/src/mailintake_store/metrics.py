"""The store's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STORED = Counter("mailintake_store_messages_stored_total", "Messages committed (new).")
DUPLICATES = Counter(
    "mailintake_store_duplicates_total", "Fetched messages already stored (skipped)."
)
POLL_RESULTS = Counter(
    "mailintake_store_poll_results_total", "Poll results recorded, by outcome.", ["outcome"]
)
BATCH_SECONDS = Histogram(
    "mailintake_store_batch_seconds",
    "Time to write one batch in one transaction.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOST_IN_TRANSIT = Counter(
    "mailintake_store_records_lost_in_transit_total",
    "Messages a poll published that never reached the store (downloaded again by the next poll).",
)
SMIME = Counter(
    "mailintake_store_smime_messages_total",
    "S/MIME messages by what became of them: decrypted, left_encrypted, "
    "signature_valid, signature_invalid, signature_unverifiable.",
    ["outcome"],
)
