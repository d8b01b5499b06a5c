"""Put the last full benchmark table into the README (``make bench-readme``)."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def main() -> None:
    report = json.loads((REPO / "bench-results" / "bench-full.json").read_text())
    table = (REPO / "bench-results" / "bench-full.md").read_text()
    machine = report["machine"]
    text = (REPO / "README.md").read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    block = (
        f"Last full run: {machine['cpus']} cores, Python {machine['python']}, "
        f"{machine['platform']} (a shared VM: ±20 %).\n\n{table}"
    )
    (REPO / "README.md").write_text(f"{head}{BEGIN}\n{block}{END}{tail}")


if __name__ == "__main__":
    main()
