"""Console entry point ``mailintake-scheduler``."""

from __future__ import annotations

from mailintake_scheduler.worker import build
from mailintake_shared.service import serve


def main() -> None:
    serve("scheduler", build)
