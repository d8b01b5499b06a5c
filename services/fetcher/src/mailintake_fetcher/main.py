"""Console entry point ``mailintake-fetcher``."""

from __future__ import annotations

from mailintake_fetcher.worker import build
from mailintake_shared.service import serve


def main() -> None:
    serve("fetcher", build)
