"""The one ``main()`` every background service shares.

settings → JSON logging → health server → build the worker (retried while the broker or
the database is not reachable yet) → run until SIGTERM/SIGINT → close.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from mailintake_shared.http import HealthServer
from mailintake_shared.logging import configure_logging, get_logger
from mailintake_shared.settings import Settings

log = get_logger(__name__)


class Worker(Protocol):
    def readiness(self) -> Mapping[str, bool]:
        """Named checks; the service is ready when all are true."""

    def run(self, stop: threading.Event) -> None:
        """Do the work until ``stop`` is set."""

    def close(self) -> None:
        """Release connections; called once after ``run`` returned."""


def install_stop_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: object) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def build_with_retry(
    build: Callable[[], Worker], stop: threading.Event, *, max_backoff_s: float = 30.0
) -> Worker | None:
    """Call ``build`` until it succeeds (dependencies may start after us) or stop is set."""
    backoff = 0.5
    while not stop.is_set():
        try:
            return build()
        except Exception as exc:
            log.warning("start-up check failed; retrying", error=str(exc), retry_in_s=backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff_s)
    return None


def serve(service: str, build: Callable[[Settings], Worker]) -> None:
    settings = Settings()
    configure_logging(settings.log_level, service=service)
    stop = threading.Event()
    install_stop_signals(stop)
    state: dict[str, Worker | None] = {"worker": None}

    def readiness() -> Mapping[str, bool]:
        worker = state["worker"]
        return worker.readiness() if worker is not None else {"started": False}

    health = HealthServer(
        settings.http_host,
        settings.http_port,
        liveness=lambda: {"running": not stop.is_set()},
        readiness=readiness,
    ).start()
    log.info("service starting", http_port=health.port)
    try:
        worker = build_with_retry(lambda: build(settings), stop)
        if worker is None:
            return
        state["worker"] = worker
        log.info("service running")
        try:
            worker.run(stop)
        except Exception:
            log.exception("service failed; exiting so that it is restarted")
            raise
        finally:
            worker.close()
    finally:
        health.stop()
        log.info("service stopped")
