"""Console entry point ``mailintake-watcher``."""

from __future__ import annotations

from mailintake_shared.service import serve
from mailintake_watcher.worker import build


def main() -> None:
    serve("watcher", build)
