"""The fetcher's IMAP poll against real servers, without Kafka: encryption modes, the error
taxonomy step by step, budgets, large mail in ranged chunks, and server actions. The tests on
``server_mailbox`` run on every real server (Dovecot, Cyrus; ``make compat``: the others)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from mailintake_devstack.broker import free_port
from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.poll import Budget, PendingAction
from mailintake_shared.domain import AfterDownload, Encryption, FirstSync
from mailintake_shared.events import ErrorKind, PollOutcome
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.probe import probe
from mailintake_shared.mailbox.selection import Cursor
from tests.conftest import Mailbox
from tests.harness.dovecot import Dovecot
from tests.harness.mail import EIGHT_BIT, make_message
from tests.harness.mailserver import (
    MailServer,
    ServerMailbox,
    served,
)
from tests.harness.planted import planted
from tests.harness.polls import ListSink, MemoryState, run_poll
from tests.harness.views import LOOPBACK, connection_view
from tests.integration.conftest import imap_session

pytestmark = pytest.mark.integration
BUDGET = Budget(
    max_messages=500, max_bytes=10**9, max_seconds=60, batch_messages=100, chunk_bytes=64 * 1024
)


def config(
    mailbox: ServerMailbox,
    *,
    encryption: Encryption = Encryption.SSL,
    port: int | None = None,
    password: str | None = None,
    ca: bool = True,
    folder: str = "INBOX",
    after: AfterDownload = AfterDownload.MARK_SEEN,
    timeout_ms: int = 5000,
    server: MailServer | None = None,
) -> MailboxConfig:
    server = server or mailbox.server
    default_port = server.ports.imaps if encryption is Encryption.SSL else server.ports.imap
    view = connection_view(
        encryption=encryption,
        port=port or default_port,
        tls_ca_pem=server.pki.ca_text if ca else None,
        timeout_ms=timeout_ms,
        folder=folder,
        username=mailbox.username,
        after_download=after,
    )
    return MailboxConfig(
        network=LOOPBACK, view=view, password=SecretStr(password or mailbox.password)
    )


def run(
    cfg: MailboxConfig, state: MemoryState | None = None, budget: Budget = BUDGET
) -> tuple[Any, ListSink]:
    return run_poll(ImapPoll, cfg, state or MemoryState(), budget)


def by_uid(sink: ListSink) -> dict[int, bytes]:
    return {int(key.split(":")[1]): raw for key, raw in sink.by_server_id().items()}


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("encryption", [Encryption.NONE, Encryption.SSL, Encryption.STARTTLS])
def test_each_encryption_downloads_everything_as_served(
    server_mailbox: ServerMailbox, encryption: Encryption
) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, [*(make_message(i) for i in range(11)), EIGHT_BIT])
    result, sink = run(config(mailbox, encryption=encryption))
    assert result.outcome is PollOutcome.OK
    assert result.messages == 12
    on_server = served(mailbox)
    assert {uid: sha256(raw) for uid, raw in by_uid(sink).items()} == {
        uid: message.sha256 for uid, message in on_server.items()
    }
    assert all(p.chunk.final and p.chunk.sha256 is None for p in sink.chunks)


@pytest.fixture(scope="module")
def plain_only_dovecot() -> Iterator[Dovecot]:
    server = Dovecot(tls=False).start()
    yield server
    server.destroy()


def test_starttls_fails_closed_when_not_offered(plain_only_dovecot: Dovecot) -> None:
    user, password = plain_only_dovecot.add_user()
    box = Mailbox(plain_only_dovecot, user, password)
    result, sink = run(config(box, encryption=Encryption.STARTTLS, server=plain_only_dovecot))
    assert result.error_kind is ErrorKind.STARTTLS_UNAVAILABLE
    assert sink.chunks == []


def test_each_failing_step_is_named(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    cases = {
        ErrorKind.CONNECTION_REFUSED: config(mailbox, port=free_port()),
        # Courier answers a wrong password after 5 s.
        ErrorKind.AUTHENTICATION: config(
            mailbox, password=planted("wrong-password"), timeout_ms=10_000
        ),
        ErrorKind.TLS: config(mailbox, ca=False),
        ErrorKind.FOLDER_MISSING: config(mailbox, folder="Nope"),
    }
    for kind, cfg in cases.items():
        result, _ = run(cfg)
        assert (result.outcome, result.error_kind) == (PollOutcome.FAILED, kind), result.error
        assert mailbox.password not in (result.error or "")
    result, _ = run(cases[ErrorKind.TLS])
    assert "certificate" in (result.error or "")


def test_errors_say_what_to_change(mailbox: Mailbox) -> None:
    """What an operator reads after a test or a failed poll: the host and port, the
    encryption the port speaks, the folders that exist, the server's words as text."""
    server, refused_port = mailbox.server, free_port()
    said = {
        name: probe(cfg)
        for name, cfg in {
            "refused": config(mailbox, port=refused_port),
            "ssl on plain": config(mailbox, port=server.ports.imap),
            "plain on ssl": config(
                mailbox, encryption=Encryption.NONE, port=server.ports.imaps, timeout_ms=3000
            ),
            "starttls on ssl": config(
                mailbox, encryption=Encryption.STARTTLS, port=server.ports.imaps, timeout_ms=3000
            ),
            "folder": config(mailbox, folder="Nope"),
            "password": config(mailbox, password=planted("wrong-password")),
        }.items()
    }
    steps = {name: result.failed_step for name, result in said.items()}
    assert steps == {
        "refused": ErrorKind.CONNECTION_REFUSED,
        "ssl on plain": ErrorKind.TLS,
        "plain on ssl": ErrorKind.TLS,
        "starttls on ssl": ErrorKind.TLS,
        "folder": ErrorKind.FOLDER_MISSING,
        "password": ErrorKind.AUTHENTICATION,
    }
    errors = {name: result.error or "" for name, result in said.items()}
    assert f"127.0.0.1 port {refused_port} refused the connection" in errors["refused"]
    assert "answers in plain text" in errors["ssl on plain"]
    assert "use encryption `starttls` (or `none`)" in errors["ssl on plain"]
    for name in ("plain on ssl", "starttls on ssl"):
        assert "speaks TLS from the first byte; use encryption `ssl`" in errors[name]
    assert errors["folder"] == "folder 'Nope' does not exist; the folders there: 'INBOX'"
    assert "[AUTHENTICATIONFAILED] Authentication failed." in errors["password"]
    assert "b'" not in errors["password"]


def test_a_silent_server_times_out_within_the_connection_timeout(mailbox: Mailbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    started = time.monotonic()
    result, _ = run(
        config(mailbox, encryption=Encryption.NONE, port=listener.getsockname()[1], timeout_ms=1500)
    )
    elapsed = time.monotonic() - started
    listener.close()
    assert result.error_kind is ErrorKind.TIMEOUT
    # The configured time-out, not never: the upper bound leaves room for a loaded machine.
    assert 1.4 <= elapsed <= 10


def test_budget_cursor_and_large_mail_in_ranged_chunks(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    large = make_message(99, size=300_000)
    mailbox.server.seed(mailbox.username, [*(make_message(i) for i in range(24)), large])
    cfg = config(mailbox)
    budget = Budget(
        max_messages=10, max_bytes=10**9, max_seconds=60, batch_messages=4, chunk_bytes=64 * 1024
    )
    first, sink = run(cfg, budget=budget)
    assert (first.messages, first.more_pending) == (10, True)
    assert sorted(by_uid(sink)) == list(range(1, 11))

    state = MemoryState(cursor_value=Cursor(first.uidvalidity, 10))
    second, sink = run(cfg, state, budget=budget)
    assert (second.messages, second.more_pending) == (10, True)
    assert sorted(by_uid(sink)) == list(range(11, 21))

    state.cursor_value = Cursor(first.uidvalidity, 20)
    third, sink = run(cfg, state, budget=budget)
    assert (third.messages, third.more_pending) == (5, False)
    assert by_uid(sink)[25] == large
    large_parts = [p for p in sink.chunks if p.chunk.uid == 25]
    assert [p.chunk.chunk_index for p in large_parts] == list(range(len(large_parts)))
    assert len(large_parts) == -(-len(large) // (64 * 1024))
    assert [p.chunk.final for p in large_parts].count(True) == 1
    assert large_parts[-1].chunk.sha256 == hashlib.sha256(large).hexdigest()
    assert max(len(p.data) for p in large_parts) <= 64 * 1024

    bytes_budget = Budget(
        max_messages=500, max_bytes=5000, max_seconds=60, batch_messages=100, chunk_bytes=64 * 1024
    )
    limited, sink = run(cfg, MemoryState(), budget=bytes_budget)
    # It stops at the message that reaches the budget, in the middle of a FETCH group: the
    # rest of the group is read off the wire, not published, and left for the next poll.
    assert (limited.outcome, limited.more_pending) == (PollOutcome.OK, True)
    assert sorted(by_uid(sink)) == list(range(1, limited.messages + 1))
    assert limited.bytes >= 5000 > limited.bytes - len(sink.chunks[-1].data)
    state = MemoryState(cursor_value=Cursor(limited.uidvalidity, limited.messages))
    _, sink = run(cfg, state, budget=bytes_budget)
    assert min(by_uid(sink)) == limited.messages + 1


def test_a_stale_cursor_of_another_uidvalidity_starts_over(server_mailbox: ServerMailbox) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(3)))
    result, _ = run(config(mailbox), MemoryState(cursor_value=Cursor(uidvalidity=1, last_uid=3)))
    assert result.messages == 3


MAILUTILS_READONLY_UIDS = (
    "GNU Mailutils imap4d does not keep the UIDs it gives messages in a read-only session "
    "(EXAMINE): a later session gives one of them another UID"
)


@pytest.mark.parametrize(
    "after",
    [
        AfterDownload.MARK_SEEN,
        AfterDownload.DELETE,
        pytest.param(
            AfterDownload.KEEP,
            marks=pytest.mark.server_quirk("mailutils", MAILUTILS_READONLY_UIDS),
        ),
    ],
)
def test_actions_apply_only_to_committed_uids(
    server_mailbox: ServerMailbox, after: AfterDownload
) -> None:
    mailbox = server_mailbox
    mailbox.server.seed(mailbox.username, (make_message(i) for i in range(6)))
    state = MemoryState(
        pending=[
            PendingAction(message_id=100 + uid, server_id=f"1:{uid}", uid=uid) for uid in (1, 2, 3)
        ]
    )
    result, sink = run(config(mailbox, after=after), state)
    assert result.actions_applied == 3
    assert state.applied == [101, 102, 103]
    # No cursor in this state: the poll downloads what is still on the server (without
    # setting any flag: BODY.PEEK).
    downloaded = sorted(by_uid(sink))
    with imap_session(mailbox) as client:
        client.select_folder("INBOX")
        remaining = client.search(["ALL"])
        seen = client.search(["SEEN"])
    if after is AfterDownload.DELETE:
        assert (remaining, seen, downloaded) == ([4, 5, 6], [], [4, 5, 6])
    elif after is AfterDownload.KEEP:  # the server exactly as it was
        assert (remaining, seen, downloaded) == ([1, 2, 3, 4, 5, 6], [], remaining)
    else:
        assert (remaining, seen, downloaded) == ([1, 2, 3, 4, 5, 6], [1, 2, 3], remaining)


def _first_sync(
    mailbox: ServerMailbox, mode: FirstSync, since: date | None = None
) -> MailboxConfig:
    cfg = config(mailbox)
    view = cfg.view.model_copy(update={"first_sync": mode, "first_sync_since": since})
    return MailboxConfig(network=LOOPBACK, view=view, password=cfg.password)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (FirstSync.ALL, ["old seen", "old unseen", "recent seen", "recent unseen"]),
        (FirstSync.UNSEEN, ["old unseen", "recent unseen"]),
        (FirstSync.SINCE, ["recent seen", "recent unseen"]),
        (FirstSync.NONE, []),
    ],
)
def test_first_sync_modes_choose_what_the_first_poll_takes(
    server_mailbox: ServerMailbox, mode: FirstSync, expected: list[str]
) -> None:
    mailbox = server_mailbox
    old, recent = datetime(2025, 3, 1, 12, tzinfo=UTC), datetime(2026, 6, 1, 12, tzinfo=UTC)
    for name, seen, received in (
        ("old seen", True, old),
        ("old unseen", False, old),
        ("recent seen", True, recent),
        ("recent unseen", False, recent),
    ):
        mailbox.server.seed(
            mailbox.username, [make_message(subject=name)], seen=seen, received=received
        )
    cfg = _first_sync(mailbox, mode, date(2026, 1, 1) if mode is FirstSync.SINCE else None)
    first, sink = run(cfg)
    subjects = sorted(_subject(body) for body in by_uid(sink).values())
    assert subjects == expected
    assert first.baseline_uid == (None if mode is FirstSync.ALL else 4)

    # After the first poll, everything that arrives is new mail, whatever the mode.
    mailbox.server.seed(mailbox.username, [make_message(subject="new")], seen=True, received=old)
    last = max(by_uid(sink), default=0)
    state = MemoryState(cursor_value=Cursor(first.uidvalidity, last, first.baseline_uid))
    _, sink = run(cfg, state)
    assert "new" in [_subject(body) for body in by_uid(sink).values()]
    assert not set(by_uid(sink)) & set(range(1, last + 1))


def _subject(raw: bytes) -> str:
    return raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()


def test_a_shared_mailbox_is_opened_with_the_accounts_own_login(mailbox: Mailbox) -> None:
    """SASL PLAIN with the shared mailbox as the authorization identity: the harness's
    Dovecot lets its master account ``ingest`` act as any mailbox."""
    sent = [make_message(i) for i in range(4)]
    mailbox.server.seed(mailbox.username, sent)
    cfg = config(mailbox)
    view = cfg.view.model_copy(update={"username": "ingest", "shared_mailbox": mailbox.username})
    shared = MailboxConfig(
        network=LOOPBACK, view=view, password=SecretStr(mailbox.server.master_password)
    )
    result, sink = run(shared)
    assert (result.outcome, result.messages) == (PollOutcome.OK, 4), result.error
    assert sorted(by_uid(sink).values()) == sorted(sent)
    wrong = MailboxConfig(
        network=LOOPBACK, view=view, password=SecretStr("not-the-master-password")
    )
    refused, _ = run(wrong)
    assert refused.error_kind is ErrorKind.AUTHENTICATION
