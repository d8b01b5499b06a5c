"""Operations, run as an operator runs them: ``mailintake-topics``, ``mailintake status``,
``mailintake replay`` and the configuration's backup and restore, against a running pipeline
(real Dovecot, PostgreSQL and broker)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.secretbox import generate_key
from mailintake_shared.settings import Settings
from mailintake_shared.topics import TOPIC_SPECS, Topic
from tests.api import WITHOUT_ESTIMATE
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.pipeline import BIN, Database, Pipeline, settings_env, wait_until
from tests.harness.planted import planted
from tests.harness.smime import identity
from tests.integration.conftest import create_enabled, drain, imap_connection_body
from tests.integration.test_cli import Cli, answers

pytestmark = pytest.mark.integration


def run(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **settings_env(settings)}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_topics_are_created_then_checked(pipeline_settings: Settings) -> None:
    settings = pipeline_settings.model_copy(update={"create_topics": False})
    first = run(settings, "mailintake-topics")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count(" created") == len(TOPIC_SPECS)
    again = run(settings, "mailintake-topics")
    assert again.returncode == 0
    assert again.stdout.count(" ok") == len(TOPIC_SPECS)
    more = settings.model_copy(update={"topic_partitions": settings.topic_partitions + 1})
    differs = run(more, "mailintake-topics")
    assert differs.returncode == 1
    assert "3 partitions, settings say 4" in differs.stdout


def test_status_replay_backup_and_restore(
    pipeline: Pipeline,
    api: TestClient,
    db: Database,
    mailbox: Mailbox,
    pipeline_settings: Settings,
    tmp_path: Path,
) -> None:
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(5)))
    pipeline.start("config-api", "scheduler", "fetcher", "store")
    url = f"http://127.0.0.1:{pipeline.ports['config-api']}"
    wait_until(lambda: answers(f"{url}/readyz"), timeout_s=60, message="the API answers")
    cli = Cli(url)
    good = create_enabled(api, mailbox)
    body = imap_connection_body(mailbox, name="wrong password", password=planted("wrong-password"))
    broken = api.post("/connections", json=body).json()["id"]
    assert api.post(f"/connections/{broken}/enable", json=WITHOUT_ESTIMATE).status_code == 200
    drain(api, good, db, 5, timeout_s=60)
    alice = identity("alice")
    pem = (alice.certificate_pem + alice.key_pem()).decode()
    certificate = api.post("/certificates", json={"name": "alice", "pem": pem}).json()
    api.put(f"/connections/{good}/certificates", json={"certificate_ids": [certificate["id"]]})

    # status: the failing connection makes it exit 1, and --problems lists only that one.
    wait_until(
        lambda: api.get(f"/connections/{broken}").json()["status"]["consecutive_failures"] > 0,
        timeout_s=60,
        message="the broken connection failed",
    )
    status = cli.run("status", "--json", ok=False)
    assert status.returncode == 1
    rows = {row["name"]: row for row in json.loads(status.stdout)["items"]}
    assert rows["wrong password"]["last_error_kind"] == "authentication"
    assert rows[api.get(f"/connections/{good}").json()["name"]]["failures"] == 0
    problems = json.loads(cli.run("status", "--problems", "--json", ok=False).stdout)
    assert [row["name"] for row in problems["items"]] == ["wrong password"]

    # The audit log, from the command: the certificate upload is there, without its key.
    audit = cli.json("audit", "--limit", "500")
    actions = [entry["action"] for entry in audit["items"]]
    assert "POST /certificates" in actions
    assert "PRIVATE KEY" not in json.dumps(audit)

    # replay: the five messages announced again, with their ids, once more each.
    before = Counter(json.loads(r.value)["message_id"] for r in stored_events(pipeline_settings))
    assert sorted(before.values()) == [1] * 5
    cli.run("replay", good, "--since", "2000-01-01")
    wait_until(
        lambda: len(stored_events(pipeline_settings)) == 10, timeout_s=60, message="replayed"
    )
    after = Counter(json.loads(r.value)["message_id"] for r in stored_events(pipeline_settings))
    assert after == Counter(dict.fromkeys(before, 2))
    refused = cli.run("replay", good, "--since", "2030-01-02", "--until", "2030-01-01", ok=False)
    assert refused.returncode == 1
    assert "must be after" in refused.stderr

    # backup, delete everything, restore (twice): the same configuration, secrets working.
    saved = run(pipeline_settings, "mailintake-config-api", "backup")
    assert saved.returncode == 0, saved.stderr
    document = json.loads(saved.stdout)
    assert mailbox.password not in saved.stdout  # secrets stay encrypted
    assert len(document["connections"]["connections"]) == 2
    api.put(f"/connections/{good}/certificates", json={"certificate_ids": []})
    for cid in (good, broken):
        assert api.delete(f"/connections/{cid}").status_code == 204
    assert api.delete(f"/certificates/{certificate['id']}").status_code == 204
    backup_file = tmp_path / "backup.json"
    backup_file.write_text(saved.stdout)
    for _ in range(2):
        restored = run(pipeline_settings, "mailintake-config-api", "restore", str(backup_file))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "2 connections" in restored.stdout
    listed = api.get("/connections").json()
    assert sorted(c["id"] for c in listed["items"]) == sorted([good, broken])
    assert [c["id"] for c in api.get(f"/connections/{good}/certificates").json()] == [
        certificate["id"]
    ]
    # The restored password works: new mail arrives through the restored connection.
    mailbox.server.seed(mailbox.username, [make_message(99)])
    drain(api, good, db, 6, timeout_s=90)

    # A part alone, and a key that cannot read the backup: refused, nothing changed.
    only = run(
        pipeline_settings,
        "mailintake-config-api",
        "restore",
        str(backup_file),
        "--only",
        "certificates",
    )
    assert only.returncode == 0
    assert "1 certificates" in only.stdout
    other_key = pipeline_settings.model_copy(update={"encryption_keys": [generate_key()]})
    wrong_key = run(other_key, "mailintake-config-api", "restore", str(backup_file))
    assert wrong_key.returncode == 1
    assert "does not decrypt with MAILINTAKE_ENCRYPTION_KEYS" in wrong_key.stderr
    pipeline.assert_running()


def stored_events(settings: Settings) -> list[Any]:
    return list(read_topic_to_end(settings, Topic.MAIL_STORED))
