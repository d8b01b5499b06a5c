"""The README's run command brings every service up, and its curl example works as written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailintake_devstack.broker import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("config-api", "scheduler", "fetcher", "store", "watcher")


def readme_curl_example() -> str:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- curl-example:begin -->", 1)[1].split("<!-- curl-example:end -->")[0]
    return block.split("```bash", 1)[1].split("```", 1)[0]


def _ports(state: Path, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ports_file = state / "ports"
        if ports_file.exists():
            pairs = (line.split("=") for line in ports_file.read_text().split())
            return {name: int(port) for name, port in pairs}
        time.sleep(0.2)
    raise AssertionError("the devstack never wrote its ports")


def _healthy(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def test_run_command_brings_up_the_pipeline_and_readme_example_works(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILINTAKE_")}
    stack = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailintake_devstack",
            "up",
            "--state-dir",
            str(state),
            "--api-port",
            str(api_port),
            "--broker-port",
            str(free_port()),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ports = _ports(state, timeout_s=60)
        assert ports["config-api"] == api_port
        for service in SERVICES:
            assert _healthy(ports[service], timeout_s=90), f"{service} /healthz never answered"

        script = (
            readme_curl_example()
            .replace("http://127.0.0.1:8000", f"http://127.0.0.1:{api_port}")
            .replace(".devstack/admin-token", str(state / "admin-token"))
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        created_text, listed_text = result.stdout.strip().split("\n", 1)
        created = json.loads(created_text)
        listed = json.loads(listed_text)
        assert created["name"] == "Support inbox"
        assert [c["id"] for c in listed["items"]] == [created["id"]]
        assert "app-password" not in result.stdout
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    text = output.decode()
    assert "config-api up" in text, text
    assert stack.returncode == 0, text
