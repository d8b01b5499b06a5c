"""The ``mailintake`` command, run for real against the API process of a running pipeline
(real Dovecot, PostgreSQL and broker)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import BIN, Pipeline, wait_until

pytestmark = pytest.mark.integration


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MAILINTAKE_")},
            "MAILINTAKE_API_URL": url,
            "MAILINTAKE_API_TOKEN": ADMIN_TOKEN,
            "COLUMNS": "250",
        }

    def run(
        self, *args: str, stdin: str = "", ok: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "mailintake"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            cwd=cwd,
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str, stdin: str = "") -> Any:
        return json.loads(self.run(*args, "--json", stdin=stdin).stdout)


@pytest.fixture
def cli(pipeline: Pipeline) -> Cli:
    pipeline.start("config-api", "scheduler", "fetcher", "store")
    url = f"http://127.0.0.1:{pipeline.ports['config-api']}"
    wait_until(lambda: answers(f"{url}/readyz"), timeout_s=60, message="the API answers")
    return Cli(url)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_operator_session_from_create_to_delete(
    cli: Cli, mailbox: Mailbox, tmp_path: Path
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(5)))
    ca = tmp_path / "ca.pem"
    ca.write_text(mailbox.server.pki.ca_text)
    created = cli.json(
        "connections", "create",
        "--name", "Support",
        "--protocol", "imap",
        "--host", "127.0.0.1",
        "--port", str(mailbox.server.ports.imaps),
        "--encryption", "ssl",
        "--tls-ca-file", str(ca),
        "--username", mailbox.username,
        "--interval-minutes", "60",
        "--password-stdin",
        stdin=mailbox.password + "\n",
    )  # fmt: skip
    assert (created["name"], created["enabled"], created["has_password"]) == (
        "Support",
        False,
        True,
    )
    table = cli.run("connections", "list", "--search", "supp").stdout
    assert "Support" in table
    assert mailbox.password not in table
    assert "ok" in cli.run("connections", "test", "Support").stdout

    # Enabling shows the estimate and asks; "no" leaves it disabled.
    refused = cli.run("connections", "enable", "Support", stdin="n\n", ok=False)
    assert refused.returncode != 0
    assert "would download 5 messages" in refused.stdout
    assert cli.json("connections", "show", "Support")["enabled"] is False
    enabled = cli.run("connections", "enable", "Support", stdin="y\n")
    assert "enabled Support; first poll: at once" in enabled.stdout

    # Poll now, followed to the end; then the log and the queue tell the same story.
    wait_until(
        lambda: cli.json("log", "polls", "-c", "Support")["total"] >= 1,
        timeout_s=60,
        message="the first poll",
    )
    mailbox.server.seed(mailbox.username, [make_message(7)])
    polled = cli.run("connections", "poll", "Support")
    assert polled.stdout.startswith("poll requested: it runs")
    assert "ok:" in polled.stdout
    wait_until(
        lambda: cli.json("connections", "show", "Support")["status"]["messages_stored"] == 6,
        timeout_s=60,
        message="6 stored",
    )
    messages = cli.json("log", "messages", "-c", "Support", "--outcome", "stored")
    assert messages["total"] == 6
    one = messages["items"][0]
    eml = tmp_path / "one.eml"
    cli.run("queue", "raw", "message", str(one["message_id"]), "-o", str(eml))
    assert b"Message-ID:" in eml.read_bytes()
    assert cli.json("queue", "--state", "failed")["total"] == 0
    assert "polls" in cli.run("log", "polls").stdout

    updated = cli.json("connections", "update", "Support", "--interval-minutes", "7")
    assert updated["interval_minutes"] == 7
    # Moving it (STARTTLS on the plain port) asks for the password again, which then works.
    plain_port = str(mailbox.server.ports.imap)
    move = ("connections", "update", "Support", "--encryption", "starttls", "--port", plain_port)
    moved = cli.json(*move, "--password-stdin", stdin=mailbox.password + "\n")
    assert (moved["encryption"], moved["port"]) == ("starttls", mailbox.server.ports.imap)
    assert "ok" in cli.run("connections", "test", "Support").stdout
    assert "disabled" in cli.run("connections", "disable", "Support").stdout
    cli.run("connections", "delete", "Support", "--yes")
    missing = cli.run("connections", "show", "Support", ok=False)
    assert missing.returncode == 1
    assert "no connection named 'Support'" in missing.stderr


def test_errors_are_said_plainly(cli: Cli) -> None:
    bad = cli.run(
        "connections", "create", "--name", "x", "--protocol", "imap", "--username", "u",
        "--password-stdin", stdin="pw\n", ok=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "host is required" in bad.stderr
    cli.env["MAILINTAKE_API_TOKEN"] = "not-a-token"
    denied = cli.run("connections", "list", ok=False)
    assert "401" in denied.stderr


@pytest.fixture
def api_only(pipeline: Pipeline) -> Cli:
    """The API alone: what these commands say needs no poll."""
    pipeline.start("config-api")
    url = f"http://127.0.0.1:{pipeline.ports['config-api']}"
    wait_until(lambda: answers(f"{url}/readyz"), timeout_s=60, message="the API answers")
    cli = Cli(url)
    del cli.env["COLUMNS"]  # as in a pipe or a script: no width given
    return cli


def test_pipes_scripts_and_missing_terminals_are_served(api_only: Cli, tmp_path: Path) -> None:
    cli = api_only
    long_name = "Support inbox of the north-western regional customer service centre"
    cli.run(
        "connections", "create", "--name", long_name, "--protocol", "imap",
        "--host", "imap.example.com", "--username", "support@example.com", "--password-stdin",
        stdin="app-password\n",
    )  # fmt: skip
    created = cli.json("connections", "show", long_name)
    # Piped: the whole table, each row on one line, however wide.
    rows = [line for line in cli.run("connections", "list").stdout.splitlines() if "│" in line]
    assert any(created["id"] in row and long_name in row for row in rows), rows
    listed = json.loads(cli.run("--output", "json", "connections", "list").stdout)
    assert [item["name"] for item in listed["items"]] == [long_name]

    # No terminal to ask for the password on: say how to give it instead.
    asked = cli.run(
        "connections", "create", "--name", "other", "--protocol", "imap",
        "--host", "imap.example.com", "--username", "u@example.com", ok=False,
    )  # fmt: skip
    assert asked.returncode == 1
    assert "--password-stdin" in asked.stderr
    assert "Aborted" not in asked.stderr
    assert "GetPassWarning" not in asked.stderr

    # Outside the checkout, without a token: where one comes from.
    del cli.env["MAILINTAKE_API_TOKEN"]
    denied = cli.run("connections", "list", ok=False, cwd=tmp_path)
    assert denied.returncode == 1
    assert "no token was given" in denied.stderr
    assert "MAILINTAKE_API_TOKEN" in denied.stderr
    assert "--token" in denied.stderr
