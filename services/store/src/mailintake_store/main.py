"""Console entry point ``mailintake-store``."""

from __future__ import annotations

from mailintake_shared.service import serve
from mailintake_store.worker import build


def main() -> None:
    serve("store", build)
