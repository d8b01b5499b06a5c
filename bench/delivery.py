"""10. Every event once: ingestion on both databases while the API is read (a status check
every 0.25 s, which wakes the API's own outbox relay beside the store's), then the
``mail.stored`` records on the topic counted against the stored messages."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.api import api_client
from tests.harness.announced import Announced, announced, on_sqlite, read_while_stored
from tests.harness.pipeline import Database, Pipeline

from bench.env import BenchEnv, Results
from bench.measure import connection_body
from mailintake_shared.settings import Settings


def exactly_once(env: BenchEnv, results: Results, count: int, logs: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="mi-bench") as scratch:
        sqlite = on_sqlite(env.settings(), Path(scratch) / "mailintake.db")
        for name, settings in (("SQLite", sqlite), ("PostgreSQL", env.settings())):
            counted = _ingest(env, settings, count, logs / f"once-{name.lower()}")
            note = f"{counted.stored} stored, {counted.records} records on mail.stored"
            for what, events in (
                ("stored messages without mail.stored, API read meanwhile", counted.lost),
                ("mail.stored published more than once", counted.duplicates),
            ):
                results.add(
                    f"10. {name}: {what}", events, "events", target="0", met=events == 0, note=note
                )


def _ingest(env: BenchEnv, settings: Settings, count: int, logs: Path) -> Announced:
    user, password = env.mailbox(count)
    pipeline = Pipeline(settings, logs).start("scheduler", "fetcher", "store")
    db = Database(settings.database_url)
    try:
        with api_client(settings) as api:
            cid = api.post("/connections", json=connection_body(env, user, password)).json()["id"]
            enabled = api.post(f"/connections/{cid}/enable", json={"acknowledge_messages": count})
            assert enabled.status_code == 200, enabled.text
            read_while_stored(api, cid, db, count)
        return announced(settings, db)
    finally:
        pipeline.stop_all()
        db.close()
