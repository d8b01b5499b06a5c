"""Prometheus metrics shared by every service (each service adds its own beside these)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OUTBOX_PUBLISHED = Counter(
    "mailintake_outbox_published_total", "Outbox records published to Kafka."
)
SERVICE_READY = Gauge(
    "mailintake_service_ready", "1 when the service's readiness checks pass.", ["check"]
)
