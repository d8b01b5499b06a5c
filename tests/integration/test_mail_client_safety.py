"""The mail clients (a poll's, a test's, a watch's) send nothing a user name, password or folder
could turn into a command of its own, log in with SASL PLAIN (UTF-8) where the server offers
it, never let a server's words carry the password out (issue: secrets bound to their server,
no injection), and send it to no server whose TLS is stripped or whose certificate is not
trusted. On the tests' scripted server, which keeps every byte it receives, and on real
Dovecot."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.pop3_poll import Pop3Poll
from mailintake_shared.domain import Encryption, Protocol, Transport
from mailintake_shared.events import ErrorKind, PollOutcome
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import PollError
from mailintake_shared.mailbox.imap_idle import IdleSession
from mailintake_shared.mailbox.probe import probe
from tests.harness.dovecot import Dovecot
from tests.harness.ledger import BUDGET
from tests.harness.mail import make_message
from tests.harness.planted import planted
from tests.harness.polls import MemoryState, run_poll
from tests.harness.quirks import QuirkServer
from tests.harness.tls import make_pki
from tests.harness.views import LOOPBACK, connection_view

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[QuirkServer]:
    with QuirkServer() as running:
        running.mailbox.append(make_message(0))
        yield running


def config(
    port: int, username: str, password: str, *, pop3: bool = False, **view: object
) -> MailboxConfig:
    options: dict[str, object] = {
        "protocol": Protocol.POP3 if pop3 else Protocol.IMAP,
        "transport": Transport.POP3 if pop3 else Transport.IMAP,
        "encryption": Encryption.NONE,
        "port": port,
        "username": username,
        "timeout_ms": 5000,
    }
    options.update(view)
    return MailboxConfig(
        view=connection_view(**options), password=SecretStr(password), network=LOOPBACK
    )


INJECTIONS = {
    "password": ("secret\r\nX1 CREATE INJECTED", None),
    "username": (None, "user@example.com\r\nX1 CREATE INJECTED"),
    "NUL": ("secret\x00X1 CREATE INJECTED", None),
}


@pytest.mark.parametrize("field", sorted(INJECTIONS))
@pytest.mark.parametrize("auth_plain", [True, False], ids=["AUTHENTICATE PLAIN", "LOGIN"])
def test_imap_sends_no_line_break_a_field_holds(
    server: QuirkServer, field: str, auth_plain: bool
) -> None:
    server.imap.no_auth_plain = not auth_plain
    password, username = INJECTIONS[field]
    cfg = config(server.imap_port, username or server.username, password or server.password)
    result, _ = run_poll(ImapPoll, cfg, MemoryState(), BUDGET)
    assert result.outcome is PollOutcome.FAILED
    assert result.error_kind is ErrorKind.AUTHENTICATION
    assert b"INJECTED" not in server.received  # inside AUTHENTICATE PLAIN it is base64 data
    assert not any("CREATE" in command for command in server.commands)


def test_a_folder_with_a_line_break_is_never_sent(server: QuirkServer) -> None:
    cfg = config(
        server.imap_port, server.username, server.password, folder="INBOX\r\nX1 CREATE INJECTED"
    )
    result, _ = run_poll(ImapPoll, cfg, MemoryState(), BUDGET)
    assert result.outcome is PollOutcome.FAILED
    # Sent as one quoted, modified-UTF-7 name (CR LF become "&AA0ACg-"): no second command.
    assert not any("CREATE" in command.split('"')[0] for command in server.commands)
    assert b"\r\nX1 CREATE" not in server.received


@pytest.mark.parametrize("sasl", [True, False], ids=["AUTH PLAIN", "USER/PASS"])
def test_pop3_sends_no_line_break_a_field_holds(server: QuirkServer, sasl: bool) -> None:
    server.pop3.no_sasl = not sasl
    cfg = config(server.pop3_port, server.username, "secret\r\nDELE 1", pop3=True)
    result, _ = run_poll(Pop3Poll, cfg, MemoryState(), BUDGET)
    assert result.outcome is PollOutcome.FAILED
    assert not any(command.startswith("DELE") for command in server.commands)
    assert len(server.mailbox.messages) == 1


def test_a_utf8_password_signs_in_with_sasl_plain(server: QuirkServer) -> None:
    server.password = "Grüße-Kennwort-2026"
    for pop3, port, kind in (
        (False, server.imap_port, ImapPoll),
        (True, server.pop3_port, Pop3Poll),
    ):
        result, sink = run_poll(
            kind, config(port, server.username, server.password, pop3=pop3), MemoryState(), BUDGET
        )
        assert result.outcome is PollOutcome.OK, result.error
        assert len(sink.chunks) == 1
    assert not any(c.split(" ")[1:2] == ["LOGIN"] for c in server.commands)


def test_a_utf8_password_without_sasl_plain_is_refused_with_the_reason(
    server: QuirkServer,
) -> None:
    server.imap.no_auth_plain = True
    server.password = "Grüße-Kennwort-2026"
    result, _ = run_poll(
        ImapPoll, config(server.imap_port, server.username, server.password), MemoryState(), BUDGET
    )
    assert result.error_kind is ErrorKind.AUTHENTICATION
    assert "AUTHENTICATE PLAIN" in (result.error or "")


@pytest.mark.parametrize("pop3", [False, True], ids=["IMAP", "POP3"])
def test_dovecot_takes_a_utf8_password(dovecot: Dovecot, pop3: bool) -> None:
    username, password = dovecot.add_user(password="Grüße-Kennwort-2026")
    dovecot.seed(username, [make_message(1)])
    port = dovecot.ports.pop3 if pop3 else dovecot.ports.imap
    kind = Pop3Poll if pop3 else ImapPoll
    result, sink = run_poll(
        kind, config(port, username, password, pop3=pop3), MemoryState(), BUDGET
    )
    assert result.outcome is PollOutcome.OK, result.error
    assert len(sink.chunks) == 1


@pytest.mark.parametrize("pop3", [False, True], ids=["IMAP", "POP3"])
@pytest.mark.parametrize("auth_plain", [True, False], ids=["SASL PLAIN", "LOGIN or PASS"])
def test_a_server_that_quotes_the_password_back_does_not_carry_it_out(
    server: QuirkServer, pop3: bool, auth_plain: bool
) -> None:
    server.imap.echo_credentials = server.pop3.echo_credentials = True
    server.imap.no_auth_plain = server.pop3.no_sasl = not auth_plain
    secret = planted("quoted-back") + '"with\\quotes'  # quoted, it gains backslashes
    cfg = config(server.pop3_port if pop3 else server.imap_port, server.username, secret, pop3=pop3)
    result, _ = run_poll(Pop3Poll if pop3 else ImapPoll, cfg, MemoryState(), BUDGET)
    assert result.error_kind is ErrorKind.AUTHENTICATION
    error = result.error or ""
    assert "Authentication failed" in error  # the server's words stay
    encoded = base64.b64encode(f"\0{server.username}\0{secret}".encode()).decode()
    assert secret not in error
    assert encoded not in error
    assert secret.split('"')[0] not in error
    tested = probe(cfg)
    assert tested.failed_step is ErrorKind.AUTHENTICATION
    assert secret not in (tested.error or "")
    assert encoded not in (tested.error or "")


async def _watch_sign_in(cfg: MailboxConfig) -> None:
    session = await IdleSession.open(cfg)
    await session.close()


def test_a_watch_signs_in_as_a_poll_does_and_lets_no_quoted_password_out(
    server: QuirkServer,
) -> None:
    """The watcher's IDLE session: SASL PLAIN (UTF-8) where offered, LOGIN only for ASCII, and
    a refusal that quotes the password back reaches the watch state without it."""
    server.password = "Grüße-Kennwort-2026"
    asyncio.run(_watch_sign_in(config(server.imap_port, server.username, server.password)))
    assert "AUTHENTICATE PLAIN <response>" in server.commands
    assert not any(c.split(" ")[1:2] == ["LOGIN"] for c in server.commands)

    server.imap.no_auth_plain = True
    with pytest.raises(PollError) as unsendable:
        asyncio.run(_watch_sign_in(config(server.imap_port, server.username, server.password)))
    assert unsendable.value.kind is ErrorKind.AUTHENTICATION
    assert "AUTHENTICATE PLAIN" in str(unsendable.value)

    server.imap.echo_credentials = True
    secret = planted("quoted-back") + '"with\\quotes'
    for auth_plain in (True, False):
        server.imap.no_auth_plain = not auth_plain
        with pytest.raises(PollError) as refused:
            asyncio.run(_watch_sign_in(config(server.imap_port, server.username, secret)))
        said = str(refused.value)
        assert refused.value.kind is ErrorKind.AUTHENTICATION
        assert "Authentication failed" in said  # the server's words stay
        encoded = base64.b64encode(f"\0{server.username}\0{secret}".encode()).decode()
        assert secret not in said
        assert encoded not in said
        assert secret.split('"')[0] not in said


def test_starttls_answered_ok_and_then_plain_text_gets_no_password(server: QuirkServer) -> None:
    """A man in the middle that strips TLS: OK to STARTTLS, then plain text goes on."""
    server.imap.starttls_plain = True
    cfg = config(server.imap_port, server.username, server.password, encryption=Encryption.STARTTLS)
    result, _ = run_poll(ImapPoll, cfg, MemoryState(), BUDGET)
    assert result.error_kind is ErrorKind.TLS
    plain = base64.b64encode(f"\0{server.username}\0{server.password}".encode())
    assert server.password.encode() not in server.received
    assert plain not in server.received
    assert not any("LOGIN" in c or "AUTHENTICATE" in c for c in server.commands)


@pytest.mark.parametrize("pop3", [False, True], ids=["IMAP", "POP3"])
def test_a_certificate_the_trusted_ca_did_not_sign_gets_no_password(
    tmp_path: Path, pop3: bool
) -> None:
    trusted, other = make_pki(tmp_path / "trusted"), make_pki(tmp_path / "other")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(other.cert_pem, other.key_pem)
    with QuirkServer(tls=context) as server:
        port = server.pop3_port if pop3 else server.imap_port
        cfg = config(
            port,
            server.username,
            server.password,
            pop3=pop3,
            encryption=Encryption.SSL,
            tls_ca_pem=trusted.ca_text,
        )
        result, _ = run_poll(Pop3Poll if pop3 else ImapPoll, cfg, MemoryState(), BUDGET)
        assert result.error_kind is ErrorKind.TLS
        assert "certificate" in (result.error or "")
        assert server.received == b""  # not one byte: no command, no password
