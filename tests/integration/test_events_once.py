"""Each stored message is announced on ``mail.stored`` exactly once, on both databases, while
the API is read during ingestion (each request wakes the API's own outbox relay, beside the
store's: on the embedded default SQLite this once lost and repeated events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailintake_shared.settings import Settings
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.announced import announced, on_sqlite, read_while_stored
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline
from tests.integration.conftest import create_enabled

pytestmark = pytest.mark.integration

TOTAL = 1500


@pytest.fixture(params=["sqlite", "postgresql"])
def db_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pipeline_settings: Settings
) -> Settings:
    if request.param == "postgresql":
        return pipeline_settings
    return on_sqlite(pipeline_settings, tmp_path / "mailintake.db")


def test_every_stored_message_is_announced_once_while_the_api_is_read(
    db_settings: Settings, tmp_path: Path, mailbox: Mailbox
) -> None:
    settings = db_settings.model_copy(update={"poll_max_messages": 500})
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(TOTAL)))
    pipeline = Pipeline(settings, tmp_path / "logs").start("scheduler", "fetcher", "store")
    db = Database(settings.database_url)
    try:
        with api_client(settings) as api:
            read_while_stored(api, create_enabled(api, mailbox), db, TOTAL)
        counted = announced(settings, db)
        assert (counted.stored, counted.lost, counted.duplicates) == (TOTAL, 0, 0), counted
        pipeline.assert_running()
    finally:
        pipeline.stop_all()
        db.close()
