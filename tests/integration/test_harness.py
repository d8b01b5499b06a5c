"""The real components the other tests stand on: they start, speak their protocols, and
reject what they should (an unverified certificate, a wrong password). The mail-server tests
run on each real server."""

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

from tests.harness.mail import EIGHT_BIT, make_message
from tests.harness.mailserver import ServerMailbox, served

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


UIDPLUS = {"dovecot": True, "cyrus": True, "mailutils": False, "courier": True}


def test_imaps_verifies_against_the_test_ca(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    server = mailbox.server
    server.seed(mailbox.username, (make_message(i) for i in range(3)))
    context = ssl.create_default_context(cafile=str(server.pki.ca_pem))
    with IMAPClient("127.0.0.1", server.ports.imaps, ssl=True, ssl_context=context) as client:
        client.login(mailbox.username, mailbox.password)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 3
        assert (b"UIDPLUS" in client.capabilities()) is UIDPLUS[server.name]

    untrusting = ssl.create_default_context()
    untrusting.load_verify_locations(cadata=_unrelated_ca())
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("127.0.0.1", server.ports.imaps, ssl=True, ssl_context=untrusting)


def test_starttls_and_wrong_password(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    server = mailbox.server
    context = ssl.create_default_context(cafile=str(server.pki.ca_pem))
    client = IMAPClient("127.0.0.1", server.ports.imap, ssl=False)
    client.starttls(ssl_context=context)
    with pytest.raises(LoginError):
        client.login(mailbox.username, "wrong")
    client.login(mailbox.username, mailbox.password)
    client.logout()


def test_pop3_and_pop3s(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
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


def test_seeding_many_messages_is_fast_and_complete(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    server = mailbox.server
    assert server.seed(mailbox.username, (make_message(i, size=8192) for i in range(2000))) == 2000
    archive = "INBOX.Archive" if server.name == "courier" else "Archive"  # its namespace
    server.seed(mailbox.username, [make_message(9999)], folder=archive)
    with IMAPClient("127.0.0.1", server.ports.imap, ssl=False) as client:
        client.login(mailbox.username, mailbox.password)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 2000
        assert client.folder_status(archive, [b"MESSAGES"])[b"MESSAGES"] == 1
        uids = client.search(["ALL"])
        body = client.fetch(uids[:1], [b"BODY.PEEK[]"])[uids[0]][b"BODY[]"]
        assert b"Message-ID:" in body
        assert len(body) > 8000


# What each server does with undeclared 8-bit bytes: in headers, in the body.
KEEPS_8BIT = {
    "dovecot": (True, True),
    "cyrus": (False, True),
    "mailutils": (True, True),
    "courier": (True, True),  # over IMAP; its POP3 rewrites 8-bit mail unless UTF8 is on
}


def test_what_each_server_serves_of_8bit_mail(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, [EIGHT_BIT])
    (raw,) = (message.raw for message in served(mailbox).values())
    head, body = raw.split(b"\r\n\r\n", 1)
    sent_head, sent_body = EIGHT_BIT.split(b"\r\n\r\n", 1)
    assert (head == sent_head, body == sent_body) == KEEPS_8BIT[mailbox.server.name]
    if head != sent_head:  # Cyrus: each 8-bit byte of a header becomes an X
        assert head == bytes(b if b < 0x80 else ord("X") for b in sent_head)


def _unrelated_ca() -> str:
    import tempfile
    from pathlib import Path

    from tests.harness.tls import make_pki

    return make_pki(Path(tempfile.mkdtemp()) / "other").ca_text
