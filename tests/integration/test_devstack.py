"""The README's run command brings every service up, and its curl example works as written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mailintake_config_api.auth import hash_token
from mailintake_devstack.broker import free_port
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, wait_until
from tests.integration.conftest import imap_connection_body

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


def _status(url: str, token: str, method: str = "GET") -> int:
    body = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, method=method, data=body)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_run_command_brings_up_the_pipeline_and_readme_example_works(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    state.mkdir()
    (state / "api-tokens").write_text(f"# a viewer\nviewer:{hash_token('viewer-from-file')}\n")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILINTAKE_")}
    env["MAILINTAKE_API_TOKENS"] = f"viewer:{hash_token('viewer-from-env')}"
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

        # Tokens beside the generated admin's: from the environment and from .devstack/.
        connections = f"http://127.0.0.1:{api_port}/connections"
        for token in ("viewer-from-file", "viewer-from-env"):
            assert _status(connections, token) == 200
            assert _status(connections, token, "POST") == 403
        assert _status(connections, "not-a-token") == 401
        sign_in = f"http://127.0.0.1:{api_port}/console/sign-in"
        assert _status(sign_in, "") == 200  # the console, out of the box
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    text = output.decode()
    assert "config-api up" in text, text
    assert f"Console: http://127.0.0.1:{api_port}/console " in text, text
    assert stack.returncode == 0, text


def _devstack(state: Path, api_port: int, broker_port: int, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILINTAKE_")}
    env.update(
        {
            # Only the start (and a new topic) republish the connections: no timer to hide
            # behind. Quick consumer-group joins on the local broker.
            "MAILINTAKE_CONNECTIONS_RESYNC_SECONDS": "0",
            "MAILINTAKE_KAFKA_MAX_POLL_INTERVAL_MS": "6000",
            "MAILINTAKE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        }
    )
    command = [sys.executable, "-m", "mailintake_devstack", "up", "--state-dir", str(state)]
    ports = ["--api-port", str(api_port), "--broker-port", str(broker_port)]
    return subprocess.Popen(
        [*command, *ports], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _stop(stack: subprocess.Popen[bytes]) -> str:
    stack.send_signal(signal.SIGINT)
    output, _ = stack.communicate(timeout=90)
    assert stack.returncode == 0, output.decode()
    return output.decode()


def _up(state: Path) -> dict[str, int]:
    ports = _ports(state, timeout_s=60)
    for service in SERVICES:
        assert _healthy(ports[service], timeout_s=90), f"{service} /healthz never answered"
    return ports


def test_a_restart_resumes_polling_at_once_and_serves_poll_now_meanwhile(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    """Stop everything, start again: the broker comes back empty, on its port; the schedule
    is rebuilt at once, and a "poll now" asked before the scheduler knows the connection
    again is served, not dropped."""
    state, api_port, broker_port = tmp_path / "stack", free_port(), free_port()
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(3)))
    stack = _devstack(state, api_port, broker_port, tmp_path)
    db = Database(f"sqlite:///{state / 'mailintake.db'}")
    try:
        _up(state)
        second = _devstack(state, free_port(), free_port(), tmp_path)
        refused, _ = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"already running in this checkout (PID {stack.pid}" in refused.decode()

        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {(state / 'admin-token').read_text().strip()}"},
            timeout=60,
        )
        body = imap_connection_body(mailbox, interval_minutes=1)
        cid = api.post("/connections", json=body).json()["id"]
        enabled = api.post(f"/connections/{cid}/enable", json={"acknowledge_messages": 3})
        assert enabled.status_code == 200, enabled.text
        wait_until(lambda: db.message_count() == 3, timeout_s=120, message="the first sync")
        _stop(stack)
        logs = {p.name: p.read_text() for p in (state / "logs").glob("*.log")}
        assert not [n for n, text in logs.items() if '"level": "error"' in text], logs

        mailbox.server.seed(mailbox.username, (make_message(i) for i in range(10, 12)))
        restarted_at = datetime.now(UTC)
        stack = _devstack(state, api_port, broker_port, tmp_path)
        assert _ports(state, timeout_s=60)["broker"] == broker_port  # not moved by TIME_WAIT
        wait_until(lambda: _healthy(api_port, 1), timeout_s=90, message="the API answers")
        asked = api.post(f"/connections/{cid}/poll")
        assert asked.status_code == 202, asked.text
        assert asked.json()["detail"].startswith("poll requested: it runs")
        wait_until(lambda: db.message_count() == 5, timeout_s=180, message="mail after restart")
        first_after = db.rows(
            "SELECT reason FROM poll_log WHERE started_at >= :at ORDER BY started_at",
            at=restarted_at.strftime("%Y-%m-%d %H:%M:%S.%f"),  # as SQLite keeps it
        )
        # The request was kept and served at once, not left to the schedule. The watcher,
        # back too, may see the new mail first and ask for the same poll (push).
        assert first_after[0].reason in ("manual", "push"), first_after

        # And the schedule itself is back: new mail without asking.
        mailbox.server.seed(mailbox.username, [make_message(20)])
        wait_until(lambda: db.message_count() == 6, timeout_s=180, message="a scheduled poll")
        _stop(stack)
    finally:
        if stack.poll() is None:
            stack.kill()
        db.close()
