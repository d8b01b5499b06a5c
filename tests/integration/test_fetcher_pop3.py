"""The fetcher's POP3 poll against real servers, without Kafka: encryption modes, UIDL as
identity, keep-on-server, DELE only for committed messages (applied at QUIT), large mail in
chunks, and a server without UIDL refused. The tests on ``server_mailbox`` run on every real
server (Dovecot, Cyrus; ``make compat``: the others)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from mailintake_fetcher.poll import Budget, PendingAction
from mailintake_fetcher.pop3_poll import Pop3Poll
from mailintake_shared.domain import AfterDownload, Encryption, Protocol, Transport
from mailintake_shared.events import ErrorKind, PollOutcome
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.probe import probe
from tests.conftest import Mailbox
from tests.harness.dovecot import Dovecot
from tests.harness.mail import EIGHT_BIT, make_message
from tests.harness.mailserver import MailServer, ServerMailbox, served
from tests.harness.planted import planted
from tests.harness.polls import ListSink, MemoryState, run_poll
from tests.harness.views import LOOPBACK, connection_view

pytestmark = pytest.mark.integration
BUDGET = Budget(
    max_messages=500, max_bytes=10**9, max_seconds=60, batch_messages=100, chunk_bytes=64 * 1024
)


def pop3_config(
    mailbox: ServerMailbox,
    *,
    encryption: Encryption = Encryption.SSL,
    after: AfterDownload = AfterDownload.MARK_SEEN,
    server: MailServer | None = None,
    port: int | None = None,
    timeout_ms: int = 5000,
) -> MailboxConfig:
    server = server or mailbox.server
    default_port = server.ports.pop3s if encryption is Encryption.SSL else server.ports.pop3
    view = connection_view(
        protocol=Protocol.POP3,
        transport=Transport.POP3,
        encryption=encryption,
        port=port or default_port,
        tls_ca_pem=server.pki.ca_text,
        timeout_ms=timeout_ms,
        folder=None,
        username=mailbox.username,
        after_download=after,
    )
    return MailboxConfig(network=LOOPBACK, view=view, password=SecretStr(mailbox.password))


def run(
    cfg: MailboxConfig, state: MemoryState | None = None, budget: Budget = BUDGET
) -> tuple[Any, ListSink]:
    return run_poll(Pop3Poll, cfg, state or MemoryState(), budget)


def by_uidl(sink: ListSink) -> dict[str, bytes]:
    return sink.by_server_id()


def remember(state: MemoryState, sink: ListSink) -> None:
    """What the store would do: the downloaded UIDLs become known."""
    state.known |= set(by_uidl(sink))


@pytest.mark.parametrize("encryption", [Encryption.NONE, Encryption.SSL, Encryption.STARTTLS])
def test_each_encryption_downloads_everything_byte_for_byte(
    server_mailbox: ServerMailbox, encryption: Encryption
) -> None:
    mailbox = server_mailbox
    # Lines that start with a dot (dot-stuffed on the wire) and a long line survive.
    tricky = make_message(100).replace(b"\r\n\r\n", b"\r\n\r\n.hidden\r\n..double\r\n", 1)
    tricky += b"x" * 5000 + b"\r\n"
    mailbox.server.seed(mailbox.username, [*(make_message(i) for i in range(5)), tricky, EIGHT_BIT])
    result, sink = run(pop3_config(mailbox, encryption=encryption))
    assert (result.outcome, result.messages, result.error) == (PollOutcome.OK, 7, None)
    # What the server serves over IMAP is what it holds (it may have rewritten 8-bit bytes).
    assert sorted(by_uidl(sink).values()) == sorted(m.raw for m in served(mailbox).values())
    assert all(p.chunk.uid is None and p.chunk.uidvalidity is None for p in sink.chunks)


def test_keep_on_server_downloads_only_unknown_uidls(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(3)))
    state = MemoryState()
    first, sink = run(pop3_config(mailbox), state)
    assert first.messages == 3
    remember(state, sink)
    again, sink = run(pop3_config(mailbox), state)
    assert (again.messages, sink.chunks) == (0, [])
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(10, 12)))
    third, sink = run(pop3_config(mailbox), state)
    assert third.messages == 2
    assert not set(by_uidl(sink)) & state.known


def test_delete_removes_only_committed_messages_at_quit(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(4)))
    cfg = pop3_config(mailbox, after=AfterDownload.DELETE)
    state = MemoryState()
    _, sink = run(cfg, state)
    uidls = sorted(by_uidl(sink))
    # The store committed two of the four; only those two may go.
    committed = uidls[:2]
    state.known = set(uidls)
    state.pending = [PendingAction(i, uidl, None) for i, uidl in enumerate(committed)]
    result, _ = run(cfg, state)
    assert result.actions_applied == 2
    assert sorted(state.applied) == [0, 1]
    state.pending, state.known = [], set()
    _, sink = run(cfg, state)
    assert sorted(by_uidl(sink)) == uidls[2:]


def test_large_mail_is_streamed_in_chunks(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    large = make_message(7, size=300_000)
    mailbox.server.seed(mailbox.username, [large])
    result, sink = run(pop3_config(mailbox))
    assert result.messages == 1
    assert len(sink.chunks) >= 4
    assert all(len(p.data) <= BUDGET.chunk_bytes for p in sink.chunks)
    (on_server,) = served(mailbox).values()  # Mailutils' pop3d adds X-UIDL to what it holds
    assert next(iter(by_uidl(sink).values())) == on_server.raw
    last = sink.chunks[-1].chunk
    assert last.final
    assert last.sha256 == on_server.sha256


def test_budget_leaves_the_rest_for_the_next_poll(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(7)))
    budget = Budget(
        max_messages=3, max_bytes=10**9, max_seconds=60, batch_messages=3, chunk_bytes=64 * 1024
    )
    state = MemoryState()
    seen: set[str] = set()
    for expected in (3, 3, 1):
        result, sink = run(pop3_config(mailbox), state, budget)
        assert result.messages == expected
        assert result.more_pending is (expected == 3)
        assert not set(by_uidl(sink)) & seen
        seen |= set(by_uidl(sink))
        remember(state, sink)
    assert len(seen) == 7


@pytest.fixture(scope="module")
def plain_only_dovecot() -> Iterator[Dovecot]:
    server = Dovecot(tls=False).start()
    yield server
    server.destroy()


def test_starttls_fails_closed_when_not_offered(plain_only_dovecot: Dovecot) -> None:
    user, password = plain_only_dovecot.add_user()
    box = Mailbox(plain_only_dovecot, user, password)
    plain_only_dovecot.seed(user, [make_message(1)])
    result, sink = run(pop3_config(box, encryption=Encryption.STARTTLS, server=plain_only_dovecot))
    assert result.error_kind is ErrorKind.STARTTLS_UNAVAILABLE
    assert sink.chunks == []


def test_wrong_password_is_an_authentication_error(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    cfg = pop3_config(mailbox, timeout_ms=10_000)  # Courier answers a wrong password after 5 s
    wrong_password = planted("wrong-password")
    wrong = MailboxConfig(network=LOOPBACK, view=cfg.view, password=SecretStr(wrong_password))
    result, _ = run(wrong)
    assert result.error_kind is ErrorKind.AUTHENTICATION
    assert wrong_password not in (result.error or "")


class NoUidlHandler(socketserver.StreamRequestHandler):
    """A POP3 server from before RFC 1939's optional UIDL: everything but UIDL works."""

    def handle(self) -> None:
        self.wfile.write(b"+OK ready\r\n")
        for line in self.rfile:
            command = line.split(b" ", 1)[0].strip().upper()
            if command == b"QUIT":
                self.wfile.write(b"+OK bye\r\n")
                return
            if command in (b"UIDL", b"CAPA"):
                self.wfile.write(b"-ERR unknown command\r\n")
            elif command == b"LIST":
                self.wfile.write(b"+OK\r\n1 100\r\n.\r\n")
            else:
                self.wfile.write(b"+OK\r\n")


def test_a_server_without_uidl_is_refused(mailbox: Mailbox) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), NoUidlHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = pop3_config(mailbox, encryption=Encryption.NONE, port=server.server_address[1])
        result, sink = run(cfg)
    finally:
        server.shutdown()
        server.server_close()
    assert result.error_kind is ErrorKind.UIDL_UNSUPPORTED
    assert "UIDL" in (result.error or "")
    assert sink.chunks == []


def test_an_encryption_the_port_does_not_speak_is_named(mailbox: Mailbox) -> None:
    ports = mailbox.server.ports
    on_plain = probe(pop3_config(mailbox, port=ports.pop3))
    on_tls = probe(pop3_config(mailbox, encryption=Encryption.NONE, port=ports.pop3s))
    assert (on_plain.failed_step, on_tls.failed_step) == (ErrorKind.TLS, ErrorKind.TLS)
    assert "answers in plain text, not TLS; use encryption `starttls`" in (on_plain.error or "")
    assert "speaks TLS from the first byte; use encryption `ssl`" in (on_tls.error or "")
