"""Every message a poll asks for ends stored byte-exact, confirmed gone, or set aside in the
Incoming Mail Queue with the server's words — on the tests' scripted server playing, one at a
time, what real servers answer (DESIGN.md, promise 9). Through the real fetcher and store code
on PostgreSQL (``tests/harness/ledger.py``); the broker in between is covered elsewhere.

Each case asserts: every message stored exactly once with the server's bytes (SHA-256), or in
the queue with a reason; nothing skipped silently; the folder not stuck (new mail after the
odd one is stored); the error kind the true one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import date

import pytest

from mailintake_shared.domain import AfterDownload, FirstSync, Protocol
from mailintake_shared.events import ErrorKind, PollOutcome
from tests.harness.ledger import BUDGET, LedgerRun, digests
from tests.harness.mail import make_message
from tests.harness.quirks import QuirkServer, since

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[QuirkServer]:
    with QuirkServer() as running:
        yield running


@pytest.fixture
def imap(server: QuirkServer, database_url: str) -> Iterator[LedgerRun]:
    run = LedgerRun(database_url, server.imap_port, server.username, server.password)
    yield run
    run.close()


@pytest.fixture
def pop3(server: QuirkServer, database_url: str) -> Iterator[LedgerRun]:
    run = LedgerRun(
        database_url,
        server.pop3_port,
        server.username,
        server.password,
        protocol=Protocol.POP3,
    )
    yield run
    run.close()


def seed(server: QuirkServer, count: int, start: int = 0, size: int = 2048) -> list[bytes]:
    sent = [make_message(i, size=size) for i in range(start, start + count)]
    for raw in sent:
        server.mailbox.append(raw)
    return sent


# --- IMAP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "quirk",
    ["body_nil", "empty_literal", "no_body_item", "left_out"],
    ids=["BODY[] NIL", "{0} with a size", "no BODY[] item", "tagged NO"],
)
def test_a_message_the_server_holds_but_does_not_deliver_is_retried_then_set_aside(
    server: QuirkServer, imap: LedgerRun, quirk: str
) -> None:
    sent = seed(server, 6)
    getattr(server.imap, quirk).add(3)
    first = imap.poll()
    assert first.outcome is PollOutcome.OK
    assert [u.uid for u in first.unfetched] == [3]
    assert len(imap.stored()) == 5  # the others are not held back
    assert imap.cursor() == 6  # accounted for: pending, not lost behind the cursor
    assert imap.pending() == {"1000:3": 1}

    more = seed(server, 2, start=6)  # new mail flows while UID 3 is retried
    imap.poll()
    assert imap.pending() == {"1000:3": 2}
    imap.poll()
    assert imap.pending() == {}
    reason = imap.queue()["1000:3"]
    assert "could not be downloaded in 3 polls" in reason
    assert any(w in reason for w in ("NIL", "no bytes", "no BODY[]", "SERVERBUG")), reason
    expected = [raw for i, raw in enumerate(sent + more) if i != 2]
    assert imap.stored_digests() == digests(expected)
    assert imap.cursor() == 8
    assert len(imap.log_lines("unfetched")) == 3


def test_a_message_delivered_on_a_later_try_is_stored_once(
    server: QuirkServer, imap: LedgerRun
) -> None:
    sent = seed(server, 4)
    server.imap.body_nil.add(2)
    imap.poll()
    server.imap.body_nil.clear()
    imap.poll()
    assert imap.stored_digests() == digests(sent)
    assert imap.pending() == {}
    assert imap.queue() == {}


def test_a_message_expunged_between_search_and_fetch_leaves_no_row_and_no_queue_entry(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """Dovecot: ``* 2 FETCH (UID 2 RFC822.SIZE 0 BODY[] NIL)`` and ``OK [EXPUNGEISSUED]``."""
    sent = seed(server, 4)
    server.imap.expunged_meanwhile.add(2)
    result = imap.poll()
    assert result.outcome is PollOutcome.OK
    assert result.unfetched == []
    assert imap.stored_digests() == digests([sent[0], sent[2], sent[3]])
    assert imap.queue() == {}
    assert imap.pending() == {}
    assert imap.cursor() == 4


def test_a_search_that_finds_nothing_although_uidnext_says_otherwise(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """GNU Mailutils 3.15: ``UID SEARCH UID n:*`` answers nothing, ``UID SEARCH UID *`` BAD."""
    server.imap.search_blind = True
    sent = seed(server, 5)
    imap.poll()
    assert imap.stored_digests() == digests(sent)
    more = seed(server, 3, start=5)
    imap.poll()
    assert imap.stored_digests() == digests(sent + more)
    server.imap.no_uidnext = True  # nor does the answer rely on UIDNEXT
    last = seed(server, 2, start=8)
    imap.poll()
    assert imap.stored_digests() == digests(sent + more + last)
    assert imap.cursor() == 10


def test_first_sync_unseen_on_a_server_whose_search_finds_nothing(
    server: QuirkServer, imap: LedgerRun
) -> None:
    server.imap.search_blind = True
    read = make_message(0)
    unread = make_message(1)
    server.mailbox.append(read, flags=["\\Seen"])
    server.mailbox.append(unread)
    imap.view_options["first_sync"] = FirstSync.UNSEEN
    imap.poll()
    assert imap.stored_digests() == digests([unread])


def test_first_sync_since_takes_the_arrival_date(server: QuirkServer, imap: LedgerRun) -> None:
    old, new = make_message(0), make_message(1)
    server.mailbox.append(old, when=since(date(2025, 1, 1)))
    server.mailbox.append(new, when=since(date(2026, 6, 1)))
    imap.view_options.update(first_sync=FirstSync.SINCE, first_sync_since=date(2026, 1, 1))
    imap.poll()
    assert imap.stored_digests() == digests([new])
    assert imap.cursor() == 2  # the baseline: the old one is left out by the rule


def test_delete_without_uidplus_never_expunges_mail_that_is_not_stored(
    server: QuirkServer, imap: LedgerRun
) -> None:
    server.imap.no_uidplus = True
    imap.after = AfterDownload.DELETE
    sent = seed(server, 3)
    imap.poll()  # stores 1-3
    other = make_message(99)
    uid = server.mailbox.append(other, flags=["\\Deleted"])  # another client's, not stored yet
    second = imap.poll()
    assert second.actions_applied == 0  # flagged, not expunged: not reported as applied
    assert server.mailbox.by_uid(uid) is not None
    assert imap.stored_digests() == digests([*sent, other])  # the other one is stored now
    third = imap.poll()
    assert third.actions_applied == 4
    assert server.mailbox.messages == []
    assert "EXPUNGE" in " ".join(server.commands)


def test_keep_opens_the_folder_read_only_and_changes_no_flag(
    server: QuirkServer, imap: LedgerRun
) -> None:
    imap.after = AfterDownload.KEEP
    flagged = make_message(50)
    sent = seed(server, 3)
    server.mailbox.append(flagged, flags=["\\Flagged"])
    imap.poll()
    second = imap.poll()  # the committed messages' "action": nothing to do on the server
    assert second.actions_applied == 4
    later = seed(server, 2, start=10)
    imap.poll()
    assert imap.stored_digests() == digests([*sent, flagged, *later])  # the cursor, not \\Seen
    verbs = [" ".join(c.split(" ")[1:3]).upper() for c in server.commands]
    assert "SELECT" not in {v.split(" ")[0] for v in verbs}
    assert sum(v.startswith("EXAMINE") for v in verbs) == 3
    assert not [v for v in verbs if "STORE" in v or "EXPUNGE" in v]
    fetches = [c for c in server.commands if "FETCH" in c.upper() and "BODY" in c.upper()]
    assert fetches
    assert all("BODY.PEEK[" in c.upper() for c in fetches)
    flags = [sorted(m.flags) for m in server.mailbox.messages]
    assert flags == [[], [], [], ["\\Flagged"], [], []]


def test_a_preauth_greeting_is_a_session_not_a_refused_login(
    server: QuirkServer, imap: LedgerRun
) -> None:
    server.imap.preauth = True
    sent = seed(server, 3)
    result = imap.poll()
    assert result.outcome is PollOutcome.OK, result.error
    assert imap.stored_digests() == digests(sent)
    assert not any(c.split(" ")[1:2] == ["LOGIN"] for c in server.commands)


def test_a_folder_is_asked_about_only_when_its_select_is_refused(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """A poll of a folder that is there is one SELECT (no LIST first); a refused SELECT says
    whether the folder is missing, or what the server said about one that exists."""
    sent = seed(server, 2)
    assert imap.poll().outcome is PollOutcome.OK
    assert imap.stored_digests() == digests(sent)
    assert not any(c.split(" ")[1:2] == ["LIST"] for c in server.commands)

    imap.view_options["folder"] = "Archive"
    missing = imap.poll()
    assert missing.error_kind is ErrorKind.FOLDER_MISSING
    assert missing.error == "folder 'Archive' does not exist; the folders there: 'INBOX'"

    imap.view_options["folder"] = "INBOX"
    server.imap.select_refused = b"[NOPERM] you may not read this folder"
    refused = imap.poll()
    assert refused.outcome is PollOutcome.FAILED
    assert refused.error_kind is not ErrorKind.FOLDER_MISSING
    assert "[NOPERM] you may not read this folder" in (refused.error or "")


def test_bye_in_the_middle_of_a_fetch_is_the_servers_words_not_throttling(
    server: QuirkServer, imap: LedgerRun
) -> None:
    sent = seed(server, 5)
    server.imap.bye_at = 3
    result = imap.poll()
    assert result.outcome is PollOutcome.FAILED
    assert result.error_kind is ErrorKind.SERVER_ERROR
    assert "Internal error occurred" in (result.error or "")
    assert len(imap.stored()) == 2  # what came before the BYE is kept
    assert imap.cursor() == 3  # UID 3 is charged with it (pending), 4 and 5 are not asked
    server.imap.bye_at = None
    imap.poll()
    assert imap.stored_digests() == digests(sent)


def test_a_message_that_ends_the_session_every_time_is_set_aside_and_the_folder_moves_on(
    server: QuirkServer, imap: LedgerRun
) -> None:
    sent = seed(server, 5)
    server.imap.bye_at = 2
    for _ in range(3):
        imap.poll()
    assert "1000:2" in imap.queue()
    imap.poll()
    assert imap.stored_digests() == digests([raw for i, raw in enumerate(sent) if i != 1])


@pytest.mark.parametrize(
    "shape",
    [
        {"shuffled_items": True},
        {"literals": True},
        {"split_items": True},
        {"unsolicited": True},
        {"shuffled_items": True, "literals": True, "split_items": True, "unsolicited": True},
    ],
    ids=["items reversed", "strings as literals", "items split", "unsolicited", "all at once"],
)
def test_any_legal_shape_of_the_answer_is_read_whole(
    server: QuirkServer, imap: LedgerRun, shape: dict[str, bool]
) -> None:
    for name, value in shape.items():
        setattr(server.imap, name, value)
    sent = seed(server, 8) + seed(server, 2, start=8, size=200_000)  # large: by byte range
    server.mailbox.append(b"")  # an empty message is a message
    result = imap.poll()
    assert result.outcome is PollOutcome.OK, result.error
    assert imap.stored_digests() == digests([*sent, b""])


def test_an_approximate_size_is_flagged_not_refused(server: QuirkServer, imap: LedgerRun) -> None:
    """Exchange's RFC822.SIZE is not always the size it then sends."""
    server.imap.size_off = 7
    sent = seed(server, 2)
    imap.poll()
    assert imap.stored_digests() == digests(sent)
    assert all("RFC822.SIZE" in (p or "") for p in imap.problems().values())


def test_a_partial_fetch_answered_whole_is_taken_whole(
    server: QuirkServer, imap: LedgerRun
) -> None:
    server.imap.partial_whole = True
    sent = seed(server, 2, size=300_000)
    imap.poll()
    assert imap.stored_digests() == digests(sent)


def test_a_retry_from_the_queue_downloads_it_again(server: QuirkServer, imap: LedgerRun) -> None:
    from mailintake_config_api.incoming import EntryKind, retry
    from mailintake_shared.db.models import FailedMessage
    from mailintake_shared.secretbox import SecretBox, generate_key
    from mailintake_shared.settings import Settings

    sent = seed(server, 3)
    server.imap.body_nil.add(2)
    for _ in range(3):
        imap.poll()
    assert "1000:2" in imap.queue()
    server.imap.body_nil.clear()
    with imap.sessions() as session, session.begin():
        entry = session.query(FailedMessage).one()
        retry(session, Settings(), SecretBox([generate_key()]), EntryKind.FAILED, entry.id)
    imap.poll()
    assert imap.queue() == {}
    assert imap.stored_digests() == digests(sent)


# --- POP3 ---------------------------------------------------------------------------------


def test_a_line_longer_than_a_megabyte_is_stored_as_it_is(
    server: QuirkServer, pop3: LedgerRun
) -> None:
    long_line = b"X-Data: data:image/png;base64," + b"A" * (3 * 1024 * 1024) + b"\r\n"
    big = make_message(0).replace(b"MIME-Version", long_line + b"MIME-Version", 1)
    dotted = make_message(1) + b".a line that starts with a dot\r\n..two\r\n"
    sent = [big, dotted, *seed(server, 2, start=2)]
    server.mailbox.messages.clear()
    for raw in sent:
        server.mailbox.append(raw)
    result = pop3.poll()
    assert result.outcome is PollOutcome.OK, result.error
    assert pop3.stored_digests() == digests(sent)


def test_two_messages_under_one_uidl_are_both_stored_and_each_deleted_only_once_committed(
    server: QuirkServer, pop3: LedgerRun
) -> None:
    """Migrated mail with a reused X-UIDL (Dovecot's ``pop3_reuse_xuidl = yes``)."""
    pop3.after = AfterDownload.DELETE
    sent = seed(server, 3)
    server.pop3.same_uidl[3] = server.mailbox.by_uid(1).uidl  # type: ignore[union-attr]
    pop3.poll()
    assert pop3.stored_digests() == digests(sent)
    assert len(server.mailbox.messages) == 3  # nothing deleted before the commit
    later = seed(server, 1, start=3)  # arrives between the polls
    server.pop3.same_uidl[4] = server.pop3.same_uidl[3]  # under the same UIDL too
    pop3.poll()
    assert [m.raw for m in server.mailbox.messages] == later  # only what is committed went
    pop3.poll()
    assert server.mailbox.messages == []
    assert pop3.stored_digests() == digests(sent + later)


def test_utf8_is_sent_when_offered_so_the_server_does_not_rewrite_8bit_mail(
    server: QuirkServer, pop3: LedgerRun
) -> None:
    """Courier rewrites 8-bit mail into a wrapper of its own unless the client sends UTF8."""
    server.pop3.utf8_rewrite = True
    raw = "Subject: Grüße\r\nMessage-ID: <x@y>\r\n\r\nÄrger über Öl\r\n".encode()
    server.mailbox.append(raw)
    pop3.poll()
    assert pop3.stored_digests() == digests([raw])
    assert "UTF8" in server.commands


def test_a_message_the_server_refuses_is_set_aside_and_the_others_flow(
    server: QuirkServer, pop3: LedgerRun
) -> None:
    sent = seed(server, 4)
    server.pop3.retr_refused.add(2)
    for _ in range(3):
        result = pop3.poll()
        assert result.outcome is PollOutcome.OK
    assert "damaged" in pop3.queue()["U00000002"]
    assert pop3.stored_digests() == digests([raw for i, raw in enumerate(sent) if i != 1])
    more = seed(server, 1, start=4)
    pop3.poll()
    assert len(pop3.stored()) == 4
    assert more[0] in pop3.stored().values()


def test_a_session_cut_in_the_middle_of_retr_loses_nothing(
    server: QuirkServer, pop3: LedgerRun
) -> None:
    sent = seed(server, 3)
    server.pop3.close_in_retr = 2
    result = pop3.poll()
    assert result.outcome is PollOutcome.FAILED
    assert result.error_kind is ErrorKind.SERVER_ERROR
    server.pop3.close_in_retr = None
    pop3.poll()
    assert pop3.stored_digests() == digests(sent)
    assert pop3.pending() == {}


def test_a_mailbox_in_use_is_said_so_not_called_a_wrong_password(
    server: QuirkServer, pop3: LedgerRun
) -> None:
    server.pop3.in_use = True
    result = pop3.poll()
    assert result.error_kind is ErrorKind.THROTTLED
    assert "IN-USE" in (result.error or "")


def test_a_wrong_password_says_what_the_server_said_as_text(
    server: QuirkServer, imap: LedgerRun
) -> None:
    imap.password = "wrong"
    result = imap.poll()
    assert result.error_kind is ErrorKind.AUTHENTICATION
    assert "[AUTHENTICATIONFAILED] Authentication failed." in (result.error or "")
    assert "b'" not in (result.error or "")


# --- hostile servers ------------------------------------------------------------------------
# Small limits keep these quick: a session of 2 s, messages of 1 MiB at most.
SHORT_SESSIONS = dataclasses.replace(BUDGET, max_session_seconds=2.0)


@pytest.mark.timeout(60)  # without the deadline, the poll would not end for minutes, or ever
@pytest.mark.parametrize(
    "quirk",
    [{"trickle": 0.02}, {"endless_fetch": True}],
    ids=["one byte at a time", "an answer without end"],
)
def test_a_session_the_server_would_hold_forever_is_cut_at_its_deadline_and_loses_nothing(
    server: QuirkServer, imap: LedgerRun, quirk: dict[str, object]
) -> None:
    """Each byte comes within the socket's time-out: only the session's deadline ends it."""
    sent = seed(server, 3)
    for name, value in quirk.items():
        setattr(server.imap, name, value)
    imap.budget = SHORT_SESSIONS
    result = imap.poll()
    assert result.outcome is PollOutcome.FAILED
    assert result.error_kind is ErrorKind.TIMEOUT
    assert "MAILINTAKE_POLL_SESSION_MAX_SECONDS" in (result.error or "")
    assert imap.pending() == {"1000:1": 1}  # charged with it: set aside if it happens each time
    (line,) = imap.log_lines("unfetched")
    assert "MAILINTAKE_POLL_SESSION_MAX_SECONDS" in line
    assert imap.cursor() == 1  # not past anything unaccounted for
    server.imap.trickle, server.imap.endless_fetch = None, False
    imap.poll()
    assert imap.stored_digests() == digests(sent)


SMALL_MESSAGES = dataclasses.replace(BUDGET, max_message_bytes=1024 * 1024)
OVER_THE_LIMIT = 1024 * 1024 + 100_000


@pytest.fixture(params=[Protocol.IMAP, Protocol.POP3], ids=["IMAP", "POP3"])
def run(request: pytest.FixtureRequest) -> LedgerRun:
    """The same case over IMAP and over POP3."""
    fixture = "pop3" if request.param is Protocol.POP3 else "imap"
    found: LedgerRun = request.getfixturevalue(fixture)
    return found


def key_of(run: LedgerRun, uid: int) -> str:
    """The server id of the quirk server's message ``uid``."""
    return f"U{uid:08X}" if run.protocol is Protocol.POP3 else f"1000:{uid}"


def test_a_message_announced_over_the_size_limit_is_not_downloaded_and_waits_in_the_queue(
    server: QuirkServer, run: LedgerRun
) -> None:
    sent = seed(server, 2) + seed(server, 1, start=2, size=OVER_THE_LIMIT) + seed(server, 2, 3)
    run.budget = SMALL_MESSAGES
    for _ in range(3):
        result = run.poll()
        assert result.outcome is PollOutcome.OK, result.error
    assert run.stored_digests() == digests(sent[:2] + sent[3:])  # the others are not held back
    reason = run.queue()[key_of(run, 3)]
    assert "could not be downloaded in 3 polls" in reason
    assert "MAILINTAKE_MAX_MESSAGE_BYTES" in reason
    assert not [c for c in server.commands if re.search(r"RETR 3$|UID FETCH 3 .*BODY", c)]
    if run.protocol is Protocol.IMAP:
        assert run.cursor() == 5  # accounted for: set aside, not skipped


@pytest.mark.timeout(60)  # without the limit, its download would not end
def test_a_message_that_never_ends_is_cut_at_the_size_limit_and_waits_in_the_queue(
    server: QuirkServer, run: LedgerRun
) -> None:
    """IMAP: every byte range answered in full; POP3: a RETR without its final dot."""
    sent = seed(server, 1) + seed(server, 1, start=1, size=100_000) + seed(server, 2, 2)
    server.imap.endless_body.add(2)  # ranged: larger than a chunk
    server.pop3.endless_retr.add(2)
    run.budget = SMALL_MESSAGES
    first = run.poll()
    (charged,) = first.unfetched
    assert charged.server_id == key_of(run, 2)
    assert "more than 1048576 bytes" in charged.reason
    assert "MAILINTAKE_MAX_MESSAGE_BYTES" in charged.reason
    if run.protocol is Protocol.POP3:  # the rest of it is still coming: the session cannot go on
        assert first.outcome is PollOutcome.FAILED
    for _ in range(3):  # set aside at the third; the next poll takes the rest
        run.poll()
    assert "MAILINTAKE_MAX_MESSAGE_BYTES" in run.queue()[key_of(run, 2)]
    assert run.stored_digests() == digests([sent[0], *sent[2:]])


def test_a_message_larger_than_the_server_says_is_cut_at_the_size_limit_all_the_same(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """Its RFC822.SIZE (and LARGER) say 1000 bytes: it comes whole, in a group of small ones."""
    sent = seed(server, 1) + seed(server, 1, start=1, size=OVER_THE_LIMIT) + seed(server, 1, 2)
    server.imap.size_off = 1000 - OVER_THE_LIMIT
    imap.budget = SMALL_MESSAGES
    result = imap.poll()
    (charged,) = result.unfetched
    assert charged.uid == 2
    assert "MAILINTAKE_MAX_MESSAGE_BYTES" in charged.reason
    assert imap.stored_digests() == digests([sent[0], sent[2]])
    assert imap.cursor() == 3


@pytest.mark.parametrize("no_uidnext", [False, True], ids=["UIDNEXT", "no UIDNEXT"])
def test_a_uid_listed_that_the_folder_never_had_does_not_move_the_cursor_over_later_mail(
    server: QuirkServer, imap: LedgerRun, no_uidnext: bool
) -> None:
    """A lie or a corrupt index: UID 1000000 is listed, and FETCH finds nothing there."""
    server.imap.no_uidnext = no_uidnext
    sent = seed(server, 3)
    server.imap.search_extra = {1_000_000}
    result = imap.poll()
    assert result.outcome is PollOutcome.OK, result.error
    assert imap.cursor() == 3  # not 1000000: UIDs 4 and on are still to come
    assert imap.queue() == {}
    assert imap.pending() == {}
    more = seed(server, 2, start=3)  # UIDs 4 and 5
    imap.poll()
    assert imap.stored_digests() == digests(sent + more)


def test_uids_outside_the_32_bit_range_are_never_asked_for(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """RFC 3501 §9: a UID is a non-zero 32-bit number."""
    sent = seed(server, 3)
    server.imap.search_extra = {0, 2**32, 2**40}
    imap.poll()
    assert imap.cursor() == 3
    more = seed(server, 2, start=3)
    imap.poll()
    assert imap.stored_digests() == digests(sent + more)
    asked = " ".join(c for c in server.commands if "FETCH" in c.upper())
    assert str(2**32) not in asked
    assert str(2**40) not in asked


def test_a_literal_of_gigabytes_announced_is_refused_before_it_is_read(
    server: QuirkServer, imap: LedgerRun
) -> None:
    sent = seed(server, 2)
    server.imap.huge_literal = 8 * 1024**3
    result = imap.poll()
    assert result.outcome is PollOutcome.FAILED
    assert "literal of 8589934592 bytes" in (result.error or "")
    server.imap.huge_literal = None
    imap.poll()
    assert imap.stored_digests() == digests(sent)


@pytest.mark.parametrize("step", ["GREETING", "AUTHENTICATE", "LOGIN", "SELECT"])
def test_a_bye_at_any_step_is_the_servers_words_not_a_refused_login(
    server: QuirkServer, imap: LedgerRun, step: str
) -> None:
    sent = seed(server, 3)
    server.imap.no_auth_plain = step == "LOGIN"
    server.imap.bye_on = step
    result = imap.poll()
    assert result.outcome is PollOutcome.FAILED
    assert result.error_kind is ErrorKind.SERVER_ERROR
    assert "the server is shutting down" in (result.error or "")
    server.imap.bye_on = None
    imap.poll()
    assert imap.stored_digests() == digests(sent)


def test_a_nul_in_the_servers_words_does_not_stop_the_store(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """No database text holds a NUL: the poll's result would fail its transaction for good."""
    seed(server, 2)
    server.imap.bye_on = "SELECT"
    server.imap.bye_words = b"shutting\x00down"
    result = imap.poll()  # written by the store's code, as the pipeline would
    assert "shutting\ufffddown" in (result.error or "")


@pytest.mark.parametrize("uidl", ["abc\x00def", "u" * 600], ids=["NUL", "600 characters"])
def test_a_uidl_the_database_cannot_hold_is_stored_once_under_its_digest(
    server: QuirkServer, pop3: LedgerRun, uidl: str
) -> None:
    """RFC 1939 §7 allows 1 to 70 characters of 0x21-0x7E; servers send more."""
    pop3.after = AfterDownload.DELETE
    sent = seed(server, 3)
    server.mailbox.messages[1].uidl = uidl
    pop3.poll()
    assert pop3.stored_digests() == digests(sent)
    assert sum(key.startswith("sha256:") for key in pop3.stored()) == 1
    pop3.poll()  # the same key in the next session: known as stored, and deleted
    assert server.mailbox.messages == []
    assert len(pop3.stored()) == 3


def test_an_expunge_in_the_middle_of_a_split_fetch_answer_keeps_each_message_its_bytes(
    server: QuirkServer, imap: LedgerRun
) -> None:
    """RFC 3501 §7.4.1: EXPUNGE responses may come during a UID FETCH; the sequence numbers
    of the messages after them move down, between the halves of their answers."""
    sent = seed(server, 6)
    imap.poll()
    more = seed(server, 5, start=6)
    server.imap.split_items = True
    server.imap.expunge_in_fetch = {1, 2}
    result = imap.poll()
    assert result.outcome is PollOutcome.OK, result.error
    assert imap.stored_digests() == digests(sent + more)
    assert [m.uid for m in server.mailbox.messages] == list(range(3, 12))
