"""Fixtures that start the real components on 127.0.0.1 and free ports, and stop them after.

- ``broker``: Tansu (the default) or Apache Kafka in a container
  (``MAILINTAKE_TEST_COMPONENTS=containers``, skipped with its reason without Docker);
- ``postgres``: a throwaway cluster; ``database_url`` is a fresh, migrated database per test;
- ``dovecot``: IMAP, IMAPS, STARTTLS, POP3 and POP3S with a test CA; ``mailbox`` a new user;
- ``cyrus``: the same on Cyrus IMAP; ``mail_server`` is each real server in turn (Dovecot and
  Cyrus, or ``MAILINTAKE_TEST_MAIL_SERVERS``), ``server_mailbox`` a new user on it: the tests
  that use them are the contract every server must pass (marked ``contract``).

Tests are isolated on the shared broker by a topic prefix of their own.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pytest
from sqlalchemy import create_engine, text

from mailintake_devstack.broker import LocalBroker
from mailintake_shared.db.migrate import upgrade
from mailintake_shared.logging import configure_logging
from mailintake_shared.secretbox import generate_key
from mailintake_shared.settings import Settings
from tests.harness.containers import (
    KafkaInContainer,
    PostgresInContainer,
    docker_unavailable_reason,
)
from tests.harness.courier import Courier
from tests.harness.cyrus import Cyrus
from tests.harness.dovecot import Dovecot
from tests.harness.mailserver import MailServer, ServerMailbox
from tests.harness.mailutils import Mailutils
from tests.harness.planted import WATCH, planted
from tests.harness.postgres import PostgresCluster
from tests.harness.unpacked import UnpackedMailServer
from tests.harness.views import LOOPBACK_CIDRS

COMPONENTS = os.environ.get("MAILINTAKE_TEST_COMPONENTS", "processes")
UnpackedServerT = TypeVar("UnpackedServerT", bound=UnpackedMailServer)
MAIL_SERVERS = os.environ.get("MAILINTAKE_TEST_MAIL_SERVERS", "dovecot,cyrus").split(",")
ADMIN_TOKEN = "test-admin-token"
VIEWER_TOKEN = "test-viewer-token"
READER_TOKEN = "test-reader-token"


def _containers_or_skip() -> None:
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _broker_scope(fixture_name: str, config: pytest.Config) -> Literal["session", "module"]:
    """A local broker per test module: every test makes topics of its own (its prefix), and
    each metadata request answers for all of them, so one broker for the whole run makes
    every Kafka client slower test after test. A container starts too slowly for that."""
    return "session" if COMPONENTS == "containers" else "module"


@pytest.fixture(scope=_broker_scope)
def broker() -> Iterator[Any]:
    if COMPONENTS == "containers":
        _containers_or_skip()
        kafka = KafkaInContainer().start()
        yield kafka
        kafka.stop()
        return
    with LocalBroker() as local:
        yield local


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    if COMPONENTS == "containers":
        _containers_or_skip()
        cluster: Any = PostgresInContainer().start()
    else:
        cluster = PostgresCluster().start()
    template = cluster.create_database()
    engine = create_engine(cluster.url(template))
    upgrade(engine)
    engine.dispose()
    cluster.template = template
    yield cluster
    cluster.destroy()


@pytest.fixture
def database_url(postgres: Any) -> Iterator[str]:
    """A fresh database at the latest schema, for this test alone; what the test left in it
    is searched for planted secrets afterwards."""
    url = str(postgres.url(postgres.create_database(template=postgres.template)))
    yield url
    engine = create_engine(url)
    with engine.connect() as connection:
        tables = connection.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename "
                "NOT IN ('alembic_version', 'messages', 'message_chunks')"
            )
        ).scalars()
        for table in list(tables):
            rows = connection.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
            WATCH.scan(f"database table {table}", "database tables", "\n".join(rows))
    engine.dispose()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot().start()
    yield server
    server.destroy()


def _running(server: UnpackedServerT) -> Iterator[UnpackedServerT]:
    try:
        yield server.start()
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def cyrus() -> Iterator[Cyrus]:
    yield from _running(Cyrus())


@pytest.fixture(scope="session")
def courier() -> Iterator[Courier]:  # make compat
    yield from _running(Courier())


@pytest.fixture(scope="session")
def mailutils() -> Iterator[Mailutils]:  # make compat
    yield from _running(Mailutils())


@pytest.fixture(params=MAIL_SERVERS)
def mail_server(request: pytest.FixtureRequest) -> MailServer:
    """Each real mail server in turn, by the name of its session fixture."""
    server: MailServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def server_mailbox(mail_server: MailServer) -> ServerMailbox:
    username, password = mail_server.add_user(password=planted("mailbox-password"))
    return ServerMailbox(mail_server, username, password)


@dataclass(frozen=True)
class Mailbox(ServerMailbox):
    """A user on the Dovecot of the run, with what only Dovecot offers."""

    server: Dovecot


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Mailbox:
    username, password = dovecot.add_user(password=planted("mailbox-password"))
    return Mailbox(dovecot, username, password)


@pytest.fixture
def settings(broker: Any, database_url: str) -> Settings:
    from mailintake_config_api.auth import hash_token

    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        encryption_keys=generate_key(),
        api_tokens=",".join(
            f"{role}:{hash_token(token)}"
            for role, token in (
                ("admin", ADMIN_TOKEN),
                ("viewer", VIEWER_TOKEN),
                ("reader", READER_TOKEN),
            )
        ),
        kafka_max_poll_interval_ms=6000,
        kafka_session_timeout_ms=3000,
        outbound_allow_cidrs=LOOPBACK_CIDRS,  # the components listen on 127.0.0.1
    )


class LogCapture:
    """Every JSON log line written while the fixture is active."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    configure_logging("DEBUG", service="test", stream=capture.stream)
    yield capture
    configure_logging("INFO", service="test")
    WATCH.scan("in-process log lines", "in-process log captures", capture.text)


@pytest.fixture(scope="session", autouse=True)
def planted_secrets_appear_nowhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the run: no planted secret in any log, metric, API response or row."""
    yield
    WATCH.scan_files(tmp_path_factory.getbasetemp(), "**/logs/*.log", "service log files")
    WATCH.scan_files(tmp_path_factory.getbasetemp(), "**/logs/*.metrics", "metrics scrapes")
    if WATCH.sightings:
        pytest.fail(
            f"planted secrets were seen ({WATCH.summary()}):\n" + "\n".join(WATCH.sightings[:50]),
            pytrace=False,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on ``mail_server`` are contract tests; ``server_quirk(name, reason)`` on one
    marks it a strict xfail on that server (a fix then fails it, and the marker goes)."""
    for item in items:
        if "mail_server" not in getattr(item, "fixturenames", ()):
            continue
        item.add_marker(pytest.mark.contract)
        server = item.callspec.params.get("mail_server")  # type: ignore[attr-defined]
        quirks = [q.args[1] for q in item.iter_markers("server_quirk") if q.args[0] == server]
        if quirks:
            item.add_marker(pytest.mark.xfail(strict=True, reason="; and ".join(quirks)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """What in-process code logged or printed during a test (exception messages included)."""
    for name, text_ in report.sections:
        WATCH.scan(f"{report.nodeid} ({name})", "captured outputs", text_)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"planted secrets: {WATCH.summary()}; seen {len(WATCH.sightings)}")
