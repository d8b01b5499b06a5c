"""The real components the other tests stand on: they start, speak their protocols, and
reject what they should (an unverified certificate, a wrong password)."""

from __future__ import annotations

import poplib
import ssl
import uuid
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import create_engine, inspect

from tests.conftest import Mailbox
from tests.harness.mail import make_message

pytestmark = pytest.mark.integration


def test_broker_round_trip(broker: Any) -> None:
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    for i in range(5):
        producer.send(topic, key=b"k", value=f"v{i}".encode())
    producer.flush()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    values = [m.value for m in consumer]
    consumer.close()
    producer.close()
    assert values == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_each_test_gets_a_fresh_migrated_database(database_url: str, postgres: Any) -> None:
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"connections", "outbox", "oauth_credentials", "alembic_version"} <= tables
    other = postgres.url(postgres.create_database(template=postgres.template))
    assert other != database_url


def test_imaps_verifies_against_the_test_ca(mailbox: Mailbox) -> None:
    server = mailbox.server
    server.seed(mailbox.username, (make_message(i) for i in range(3)))
    context = ssl.create_default_context(cafile=str(server.pki.ca_pem))
    with IMAPClient("127.0.0.1", server.ports.imaps, ssl=True, ssl_context=context) as client:
        client.login(mailbox.username, mailbox.password)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 3
        assert b"UIDPLUS" in client.capabilities()

    untrusting = ssl.create_default_context()
    untrusting.load_verify_locations(cadata=_unrelated_ca())
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("127.0.0.1", server.ports.imaps, ssl=True, ssl_context=untrusting)


def test_starttls_and_wrong_password(mailbox: Mailbox) -> None:
    server = mailbox.server
    context = ssl.create_default_context(cafile=str(server.pki.ca_pem))
    client = IMAPClient("127.0.0.1", server.ports.imap, ssl=False)
    client.starttls(ssl_context=context)
    with pytest.raises(LoginError):
        client.login(mailbox.username, "wrong")
    client.login(mailbox.username, mailbox.password)
    client.logout()


def test_pop3_and_pop3s(mailbox: Mailbox) -> None:
    server = mailbox.server
    server.seed(mailbox.username, (make_message(i) for i in range(4)))
    plain = poplib.POP3("127.0.0.1", server.ports.pop3, timeout=10)
    plain.user(mailbox.username)
    plain.pass_(mailbox.password)
    assert len(plain.uidl()[1]) == 4
    plain.quit()
    context = ssl.create_default_context(cafile=str(server.pki.ca_pem))
    secure = poplib.POP3_SSL("127.0.0.1", server.ports.pop3s, context=context, timeout=10)
    secure.user(mailbox.username)
    secure.pass_(mailbox.password)
    assert secure.stat()[0] == 4
    secure.quit()


def test_seeding_many_messages_is_fast_and_complete(mailbox: Mailbox) -> None:
    server = mailbox.server
    assert server.seed(mailbox.username, (make_message(i, size=8192) for i in range(2000))) == 2000
    server.seed(mailbox.username, [make_message(9999)], folder="Archive")
    with IMAPClient("127.0.0.1", server.ports.imap, ssl=False) as client:
        client.login(mailbox.username, mailbox.password)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 2000
        assert client.folder_status("Archive", [b"MESSAGES"])[b"MESSAGES"] == 1
        uids = client.search(["ALL"])
        body = client.fetch(uids[:1], [b"BODY.PEEK[]"])[uids[0]][b"BODY[]"]
        assert b"Message-ID:" in body
        assert len(body) > 8000


def _unrelated_ca() -> str:
    import tempfile
    from pathlib import Path

    from tests.harness.tls import make_pki

    return make_pki(Path(tempfile.mkdtemp()) / "other").ca_text
