"""``make bench`` in its quick mode, on a subset: the benchmark runs and reports its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_reports_figures_and_targets() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILINTAKE_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "2,5,9"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((REPO / "bench-results" / "bench-quick.json").read_text())
    names = [row["name"] for row in report["rows"]]
    for prefix in (
        "1. raw loop, imaplib",
        "2. fetcher / imaplib",
        "5. pipeline CPU ratio",
        "9. store alone",
    ):
        assert any(name.startswith(prefix) for name in names), (prefix, names)
    assert all(row["value"] > 0 for row in report["rows"])
    assert "| measurement | value |" in result.stdout
