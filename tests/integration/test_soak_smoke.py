"""``make soak`` in miniature: a few mailboxes, half a minute of mail and process faults; the
run reports its figures and finds nothing lost or doubled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_a_short_soak_loses_and_duplicates_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILINTAKE_")}
    # Process faults only: PostgreSQL and broker outages have tests of their own, and their
    # recovery (poll time-outs) would make this one minutes long.
    args = ["--mailboxes", "4", "--minutes", "0.4", "--rate", "4", "--fault-every", "6"]
    args += ["--faults", "killed,stopped,paused,links"]
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args, "--seed", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((REPO / "bench-results" / "soak.json").read_text())
    assert report["messages_in"] > 20
    assert report["messages_stored"] == report["messages_in"]
    assert (report["duplicates"], report["lost"], report["unexpected"]) == (0, 0, 0)
    assert sum(report["faults"].values()) >= 2
    assert report["latency_to_stored_s"]["p50"] > 0
