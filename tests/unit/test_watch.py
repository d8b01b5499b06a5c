"""Push without a server: the IDLE session's reading of what a server sends while idling,
the watch's back-off, which connections are watched, and how the API states a watch."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from mailintake_config_api.connections import watch_status
from mailintake_shared.db.models import ConnectionWatch
from mailintake_shared.domain import Encryption, Protocol, PushMode, Transport
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import PollError, classify
from mailintake_shared.mailbox.imap_idle import IdleSession, IdleUnsupportedError
from mailintake_shared.watch import WatchState
from mailintake_watcher.graph_watch import GraphWatch, _due
from mailintake_watcher.imap_watch import ImapWatch
from mailintake_watcher.repository import Subscription
from mailintake_watcher.supervisor import watch_kind
from mailintake_watcher.watch import Backoff
from tests.harness.tls import make_pki
from tests.harness.views import LOOPBACK, connection_view


class _Wire:
    """The client's side of the socket: what it wrote; the server answers DONE."""

    def __init__(self, reader: asyncio.StreamReader | None = None) -> None:
        self.sent = b""
        self._reader = reader

    def write(self, data: bytes) -> None:
        self.sent += data
        if data == b"DONE\r\n" and self._reader is not None:
            self._reader.feed_data(b"W1 OK Idle completed\r\n")


def _idle(server_says: bytes, renew_s: float = 0.05) -> tuple[list[int], IdleSession, _Wire]:
    """One IDLE round against a server that sends ``server_says`` (its tags are W1…)."""

    async def run() -> tuple[list[int], IdleSession, _Wire]:
        reader = asyncio.StreamReader()
        reader.feed_data(server_says)
        wire = _Wire(reader)
        session = IdleSession(reader, wire, timeout_s=0.5)  # type: ignore[arg-type]
        session.exists = 3
        news: list[int] = []
        await session.idle(renew_s, lambda: news.append(session.exists))
        return news, session, wire

    return asyncio.run(run())


def test_only_an_exists_above_the_known_count_is_new_mail() -> None:
    news, session, wire = _idle(
        b"* 4 EXISTS\r\n"  # before the continuation: already news
        b"+ idling\r\n"
        b"* 2 EXPUNGE\r\n"  # 3 left: not news
        b"* 3 FETCH (FLAGS (\\Seen))\r\n"  # a poll's own \\Seen: not news
        b"* 3 EXISTS\r\n"  # the same count again: not news
        b"* OK Still here\r\n"
        b"* 5 EXISTS\r\n"
        b"W1 OK IDLE terminated\r\n"
    )
    assert news == [3, 3]  # called before the count moves on: 3 → 4, then 3 → 5
    assert session.exists == 5
    assert wire.sent == b"W1 IDLE\r\n"  # the server ended the round itself: no DONE


def test_a_round_ends_with_done_and_the_tagged_answer() -> None:
    news, _, wire = _idle(b"+ idling\r\n", renew_s=0.01)
    assert news == []
    assert wire.sent == b"W1 IDLE\r\nDONE\r\n"


def test_a_literal_in_an_untagged_response_is_read_whole() -> None:
    news, session, _ = _idle(
        b"+ idling\r\n* 4 FETCH (UID 9 X-NOTE {5}\r\nhello)\r\n* 6 EXISTS\r\nW1 OK done\r\n"
    )
    assert (news, session.exists) == ([3], 6)


@pytest.mark.parametrize(
    ("server_says", "error"),
    [
        (b"+ idling\r\n* BYE going down\r\n", PollError),
        (b"W1 BAD unknown command\r\n", IdleUnsupportedError),
        (b"+ idling\r\n* 4 EXI", PollError),  # the connection ends mid-line
    ],
)
def test_a_session_that_ends_or_refuses_idle_is_reported(
    server_says: bytes, error: type[Exception]
) -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(server_says)
        reader.feed_eof()
        session = IdleSession(reader, _Wire(), timeout_s=0.5)  # type: ignore[arg-type]
        await session.idle(5.0, lambda: None)

    with pytest.raises(error):
        asyncio.run(run())


def test_the_back_off_doubles_with_jitter_and_starts_over_after_a_long_enough_watch() -> None:
    backoff = Backoff(2.0, 60.0, rng=lambda: 0.5)  # no jitter
    assert [backoff.next() for _ in range(7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    backoff.was_up(59.0)  # up shorter than the next delay: still backing off
    assert backoff.next() == 60.0
    backoff.was_up(60.0)
    assert backoff.next() == 2.0
    low, high = Backoff(10.0, 60.0, rng=lambda: 0.0), Backoff(10.0, 60.0, rng=lambda: 0.999)
    assert low.next() == 8.0
    assert 11.9 < high.next() < 12.0


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({}, ImapWatch),
        ({"protocol": Protocol.MICROSOFT_OAUTH2, "transport": Transport.GRAPH}, GraphWatch),
        ({"protocol": Protocol.GOOGLE_OAUTH2}, ImapWatch),
        ({"protocol": Protocol.POP3, "transport": Transport.POP3}, None),
        ({"push": PushMode.OFF}, None),
        ({"enabled": False}, None),
    ],
)
def test_which_connections_are_watched_and_how(overrides: dict[str, Any], kind: type) -> None:
    assert watch_kind(connection_view(**overrides)) is kind


def _report(state: str, confirmed_ago_s: float, reason: str | None = None) -> ConnectionWatch:
    now = datetime.now(UTC)
    return ConnectionWatch(
        connection_id=uuid.uuid4(),
        state=state,
        method="imap_idle",
        since=now - timedelta(minutes=5),
        reason=reason,
        holder="watcher-1",
        confirmed_at=now - timedelta(seconds=confirmed_ago_s),
    )


def test_the_api_states_a_watch_by_choice_report_or_silence() -> None:
    stale_before = datetime.now(UTC) - timedelta(seconds=90)
    view = connection_view()
    shown = watch_status(view, _report("watching", 1), stale_before)
    assert (shown.watched, shown.state, shown.method) == (True, WatchState.WATCHING, "imap_idle")
    retrying = watch_status(view, _report("retrying", 1, "timeout: no answer"), stale_before)
    assert (retrying.watched, retrying.reason) == (False, "timeout: no answer")
    stale = watch_status(view, _report("watching", 600), stale_before)
    assert (stale.watched, stale.state) == (False, WatchState.UNKNOWN)
    assert "watcher-1" in (stale.reason or "")
    assert watch_status(view, None, stale_before).state is WatchState.UNKNOWN
    for off in ({"push": PushMode.OFF}, {"enabled": False}, {"transport": Transport.POP3}):
        shown = watch_status(connection_view(**off), _report("watching", 1), stale_before)
        assert (shown.watched, shown.state) == (False, WatchState.OFF)
        assert shown.reason


def test_a_graph_subscription_is_renewed_at_half_its_life_and_created_when_gone() -> None:
    now, life = datetime.now(UTC), timedelta(minutes=60)

    def due(expires_in_min: float, needs: str | None = None) -> str | None:
        current = Subscription("s1", now + timedelta(minutes=expires_in_min), needs)
        return _due(current, now, life)

    assert _due(None, now, life) == "create"
    assert due(45) is None
    assert due(30) == "renew"  # half its lifetime has passed
    assert due(45, "reauthorize") == "renew"  # Graph asked
    assert due(45, "recreate") == "create"  # Graph removed it
    assert due(0) == "create"  # expired


# --- a hostile server, or one that refuses us -------------------------------------------------


def test_a_response_of_many_literals_is_cut_at_a_bound_not_read_into_memory() -> None:
    """Each literal under the limit, but 5 MB in one response: the watcher holds thousands
    of sessions, so what one of them reads at once must be bounded, not each piece of it."""
    literals = b"".join(b" {1000000}\r\n" + b"x" * 1_000_000 for _ in range(5))
    with pytest.raises(PollError, match="bytes") as raised:
        _idle(b"+ idling\r\n* 4 FETCH (X" + literals + b")\r\nW1 OK done\r\n")
    assert raised.value.kind is ErrorKind.SERVER_ERROR


def test_an_exists_count_beyond_what_imap_allows_is_the_server_s_fault() -> None:
    """RFC 3501's numbers are 32-bit: a longer one is a broken server, not an internal error
    (Python refuses to convert more than 4,300 digits)."""
    with pytest.raises(PollError) as raised:
        _idle(b"+ idling\r\n* " + b"9" * 5000 + b" EXISTS\r\nW1 OK done\r\n")
    assert raised.value.kind is ErrorKind.SERVER_ERROR


def test_plain_text_after_the_ok_to_starttls_is_not_read_as_if_tls_protected(
    tmp_path: Path,
) -> None:
    """A man in the middle answers STARTTLS with OK and appends lines of its own before the
    handshake (the response injection of CVE-2011-0411's kind; RFC 3207 §4.2 has the client
    discard what came before TLS). A session that read them as protected would act on the
    attacker's capabilities or replies: it is refused instead, before any credential."""
    pki = make_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.cert_pem, pki.key_pem)
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS IDLE] ready\r\n")
        while line := await reader.readline():
            received.append(line)
            tag, command = line.split()[:2]
            if command.upper() == b"STARTTLS":
                writer.write(tag + b" OK begin TLS\r\n* CAPABILITY IMAP4rev1 IDLE INJECTED\r\n")
                await writer.drain()
                await writer.start_tls(server_tls)
            elif command.upper() == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN\r\n" + tag + b" OK\r\n")
            else:
                writer.write(tag + b" OK\r\n")
            await writer.drain()

    async def run() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        view = connection_view(
            encryption=Encryption.STARTTLS, port=port, tls_ca_pem=pki.ca_text, timeout_ms=5000
        )
        try:
            session = await IdleSession.open(MailboxConfig(view, SecretStr("pw"), network=LOOPBACK))
            await session.close()
        finally:
            server.close()

    with pytest.raises(PollError) as raised:
        asyncio.run(run())
    assert raised.value.kind is ErrorKind.TLS
    sent = {line.split()[1].upper() for line in received}
    assert not sent & {b"CAPABILITY", b"AUTHENTICATE", b"LOGIN"}, sent


@pytest.mark.parametrize("chatty", ["AUTHENTICATE", "EXAMINE", "IDLE", "DONE"])
def test_untagged_chatter_does_not_stretch_the_time_out_of_an_answer(chatty: str) -> None:
    """A server that never answers one command (or IDLE's ``+``, or DONE) but keeps the
    line busy with untagged responses: the answer as a whole must come within the time-out.
    Otherwise the session never fails, and one being set up holds one of the watcher's few
    places for that for good (sixteen such servers, and no other watch is ever set up)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] ready\r\n")
        answers = {
            b"CAPABILITY": b"* CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN\r\n%s OK\r\n",
            b"EXAMINE": b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] x\r\n%s OK [READ-ONLY]\r\n",
            b"IDLE": b"+ idling\r\n",
        }
        idle_tag = b""
        while line := await reader.readline():
            words = line.split()
            command = words[0] if words[0] == b"DONE" else words[1].upper()
            if command.decode() == chatty:
                while True:
                    writer.write(b"* OK still here\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            if command == b"AUTHENTICATE":
                writer.write(b"+ \r\n")
                await reader.readline()
                writer.write(words[0] + b" OK logged in\r\n")
            elif command == b"DONE":
                writer.write(idle_tag + b" OK\r\n")
            else:
                idle_tag = words[0]
                writer.write(answers.get(command, b"%s OK\r\n").replace(b"%s", words[0]))
            await writer.drain()

    async def run() -> PollError | None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        view = connection_view(encryption=Encryption.NONE, port=port, timeout_ms=300)
        config = MailboxConfig(view, SecretStr("pw"), network=LOOPBACK)
        try:
            session = await IdleSession.open(config)
            try:
                await session.examine("INBOX")
                await session.idle(0.1, lambda: None)
            finally:
                await session.close()
        except Exception as exc:
            return classify(exc)
        finally:
            server.close()
        return None

    async def bounded() -> PollError | None:
        return await asyncio.wait_for(run(), 10.0)  # a hang fails the test: no PollError

    error = asyncio.run(bounded())
    assert error is not None
    assert error.kind is ErrorKind.TIMEOUT
