"""The IMAP response reader of the bulk path (``imap_wire``), against RFC 3501's grammar.

Hand-written cases for each shape real servers send, and a property test: random messages
rendered as any legal answer (items in any order, each string quoted or as a literal, a
message's items split over several FETCH responses, unsolicited responses in between) must
read back as exactly those messages.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.errors import classify
from mailintake_shared.mailbox.imap import sequence_set
from mailintake_shared.mailbox.imap_wire import (
    Atom,
    Fetched,
    FetchReader,
    MessageMeta,
    ProtocolViolation,
    ServerClosed,
    parse_internaldate,
    parse_values,
    read_response,
)

DATE = b'INTERNALDATE "01-Jan-2026 00:00:00 +0000"'
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def reader(
    wire: bytes, wanted: set[int] | None, **options: object
) -> tuple[FetchReader, io.BytesIO]:
    stream = io.BytesIO(wire)
    arguments: dict[str, object] = {
        "body_item": b"BODY[]",
        "metadata": True,
        "max_literal": 1 << 20,
        "max_held": 1 << 22,
    }
    arguments.update(options)
    return FetchReader(stream.readline, stream.read, b"A7", wanted, **arguments), stream  # type: ignore[arg-type]


def read(
    wire: bytes, wanted: set[int] | None, **options: object
) -> tuple[list[Fetched], FetchReader]:
    fetch, stream = reader(wire, wanted, **options)
    found = list(fetch)
    assert stream.read() == b"", "the answer was not read to its tagged reply"
    return found, fetch


def test_a_response_is_its_lines_joined_around_any_number_of_literals() -> None:
    stream = io.BytesIO(b'* 1 FETCH (A {3}\r\nx\r\n B "q" C {0}\r\n D ~{2}\r\nab)\r\nnext\r\n')
    response = read_response(stream.readline, stream.read, 100)
    assert response.literals == (b"x\r\n", b"", b"ab")
    assert parse_values(response.text, response.literals, 2) == [
        Atom(b"1"),
        Atom(b"FETCH"),
        [Atom(b"A"), b"x\r\n", Atom(b"B"), b"q", Atom(b"C"), b"", Atom(b"D"), b"ab"],
    ]
    assert stream.read() == b"next\r\n"


def test_values_keep_section_specs_whole_and_read_nil_quoted_and_lists() -> None:
    values = parse_values(
        b'(BODY[HEADER.FIELDS (FROM TO)]<0> NIL "a \\"b\\" \\\\ c" (\\Seen $Label) ())'
    )
    assert values == [
        [
            Atom(b"BODY[HEADER.FIELDS (FROM TO)]<0>"),
            None,
            b'a "b" \\ c',
            [Atom(b"\\Seen"), Atom(b"$Label")],
            [],
        ]
    ]


@pytest.mark.parametrize("text", [b"(a (b)", b"a)"])
def test_unbalanced_lists_are_a_protocol_violation(text: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_values(text)


def test_a_literal_over_the_limit_is_refused_before_it_is_read() -> None:
    stream = io.BytesIO(b"* 1 FETCH (BODY[] {999999}\r\n")
    with pytest.raises(ProtocolViolation):
        read_response(stream.readline, stream.read, 1000)


def test_the_common_shape_is_read_message_by_message_to_the_tagged_reply() -> None:
    wire = (
        b"* 1 FETCH (UID 10 RFC822.SIZE 5 " + DATE + b" FLAGS (\\Seen) BODY[] {5}\r\nhello)\r\n"
        b"* 3 EXISTS\r\n"
        b"* 2 FETCH (UID 11 RFC822.SIZE 7 " + DATE + b" FLAGS () BODY[] {7}\r\nwor)\r\nd)\r\n"
        b"* 5 FETCH (UID 99 RFC822.SIZE 1 " + DATE + b" FLAGS () BODY[] {1}\r\nx)\r\n"
        b"A7 OK Fetch completed.\r\n"
    )
    found, fetch = read(wire, {10, 11, 14})
    assert found == [
        Fetched(MessageMeta(10, 5, WHEN, True), b"hello"),
        Fetched(MessageMeta(11, 7, WHEN, False), b"wor)\r\nd"),  # a literal may hold anything
    ]  # 99 was not asked for; 14 not answered
    assert fetch.report.delivered == {10, 11}
    assert fetch.report.status == "OK"


def test_items_in_any_order_with_literals_anywhere() -> None:
    wire = (
        b"* 1 FETCH (BODY[] {5}\r\nhello FLAGS (\\SEEN) INTERNALDATE {26}\r\n"
        b"01-Jan-2026 00:00:00 +0000 RFC822.SIZE 5 UID 10)\r\n"
        b"A7 OK\r\n"
    )
    found, _ = read(wire, {10})
    assert found == [Fetched(MessageMeta(10, 5, WHEN, True), b"hello")]


def test_a_messages_items_split_over_responses_are_joined_and_expunges_renumber() -> None:
    wire = (
        b"* 2 FETCH (FLAGS (\\Seen) " + DATE + b" RFC822.SIZE 5)\r\n"
        b"* 1 EXPUNGE\r\n"  # message 2 is message 1 from here on
        b"* 3 FETCH (FLAGS ())\r\n"  # a flag change of another message
        b"* 1 FETCH (UID 10 BODY[] {5}\r\nhello)\r\n"
        b"A7 OK done\r\n"
    )
    found, _ = read(wire, {10})
    assert found == [Fetched(MessageMeta(10, 5, WHEN, True), b"hello")]


def test_a_message_expunged_during_the_fetch_is_reported_so() -> None:
    wire = b"* 4 FETCH (UID 12 FLAGS ())\r\n* 4 EXPUNGE\r\nA7 OK\r\n"
    _, fetch = read(wire, {12})
    assert fetch.report.expunged == {12}
    assert fetch.report.delivered == set()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"* 2 FETCH (UID 2 RFC822.SIZE 0 BODY[] NIL)\r\n", "NIL"),
        (b"* 2 FETCH (UID 2 RFC822.SIZE 1648 " + DATE + b" FLAGS () BODY[] {0}\r\n)\r\n", "empty"),
        (b'* 2 FETCH (UID 2 RFC822.SIZE 1648 BODY[] "")\r\n', "empty"),
        (b"* 2 FETCH (UID 2 RFC822.SIZE 1648 " + DATE + b" FLAGS ())\r\n", "had no BODY[]"),
    ],
    ids=["BODY[] NIL", "{0} with a size", "empty quoted with a size", "no BODY[] item"],
)
def test_an_answer_that_is_not_the_message_is_a_problem_not_a_message(
    answer: bytes, problem: str
) -> None:
    found, fetch = read(answer + b"A7 OK [EXPUNGEISSUED] Some messages were expunged\r\n", {2})
    assert found == []
    assert problem in fetch.report.problems[2]
    assert "EXPUNGEISSUED" in fetch.report.server_said


def test_an_empty_message_of_size_zero_is_a_message() -> None:
    wire = b"* 1 FETCH (UID 3 RFC822.SIZE 0 " + DATE + b" FLAGS () BODY[] {0}\r\n)\r\nA7 OK\r\n"
    found, _ = read(wire, {3})
    assert found == [Fetched(MessageMeta(3, 0, WHEN, False), b"")]


def test_a_tagged_no_keeps_what_was_delivered_and_the_servers_words() -> None:
    wire = (
        b"* 1 FETCH (UID 10 RFC822.SIZE 5 " + DATE + b" FLAGS () BODY[] {5}\r\nhello)\r\n"
        b"* NO Message 11 is damaged\r\n"
        b"A7 NO [SERVERBUG] Some messages could not be fetched\r\n"
    )
    found, fetch = read(wire, {10, 11})
    assert [f.meta.uid for f in found] == [10]
    assert fetch.report.status == "NO"
    assert "damaged" in fetch.report.server_said
    assert "SERVERBUG" in fetch.report.server_said


def test_one_uid_asked_for_takes_an_answer_without_uid() -> None:
    wire = b"* 7 FETCH (BODY[]<0> {3}\r\nabc)\r\nA7 OK\r\n"
    found, _ = read(wire, {42}, body_item=b"BODY[]<0>", metadata=False)
    assert found == [Fetched(MessageMeta(42, 3, None, False), b"abc")]


def test_a_second_answer_for_the_same_message_is_passed_over() -> None:
    one = b"* 1 FETCH (UID 10 RFC822.SIZE 1 " + DATE + b" FLAGS () BODY[] {1}\r\nx)\r\n"
    found, _ = read(one + one + b"A7 OK\r\n", {10})
    assert len(found) == 1


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"* BYE [UNAVAILABLE] Server shutting down\r\n", ServerClosed),
        (b"* 1 FETCH (UID 10 BODY[] {50}\r\ncut short", ServerClosed),
        (b"* 1 FETCH (UID 10 RFC822.SIZE 5 BODY[] {5}\r\nhello)\r\n", ServerClosed),
        (b"* 1 FETCH (UID 10 BODY[] {99999999}\r\n", ProtocolViolation),
        (b"+ go ahead\r\n", ProtocolViolation),
    ],
    ids=[
        "bye",
        "closed inside a literal",
        "closed before the reply",
        "huge literal",
        "continuation",
    ],
)
def test_a_broken_answer_raises(wire: bytes, error: type[Exception]) -> None:
    fetch, _ = reader(wire, {10})
    with pytest.raises(error):
        list(fetch)


def test_a_bye_is_the_servers_words_and_says_whether_it_throttles() -> None:
    assert classify(ServerClosed("[UNAVAILABLE] try later")).kind is ErrorKind.THROTTLED
    closed = classify(ServerClosed("Internal error occurred"))
    assert closed.kind is ErrorKind.SERVER_ERROR
    assert "Internal error occurred" in str(closed)


def test_bodies_held_back_for_their_uid_are_bounded() -> None:
    wire = b"".join(
        b"* %d FETCH (BODY[] {600}\r\n" % n + b"x" * 600 + b")\r\n" for n in range(1, 10)
    )
    fetch, _ = reader(wire + b"A7 OK\r\n", {1, 2}, max_held=2000)
    with pytest.raises(ProtocolViolation):
        list(fetch)


def test_internaldate_with_a_space_padded_day_and_an_odd_zone() -> None:
    assert parse_internaldate(b" 1-Jan-2026 00:00:00 -0130") == datetime(
        2026, 1, 1, tzinfo=timezone(-timedelta(hours=1, minutes=30))
    )
    assert parse_internaldate(b"nonsense") is None


def test_sequence_sets_are_compact() -> None:
    assert sequence_set([5, 1, 2, 3, 7, 8, 10]) == "1:3,5,7:8,10"


# --- any legal answer ------------------------------------------------------------------------

_DATES = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC)
)


def _quotable(data: bytes) -> bool:
    return all(0x20 <= b < 0x7F for b in data)


def _quoted(data: bytes) -> bytes:
    """A quoted string (RFC 3501 §4.3): quoted-specials escaped with a backslash."""
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, list[Fetched], set[int]]:
    """A bulk FETCH answer in any legal shape, and the messages it carries."""
    uids = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=6, unique=True))
    expected: list[Fetched] = []
    responses: list[list[bytes]] = []
    for number, uid in enumerate(uids, start=1):
        body = draw(
            st.binary(max_size=200) | st.sampled_from([b")\r\n", b"{5}\r\n", b"* 1 FETCH ("])
        )
        when = draw(_DATES)
        seen = draw(st.booleans())
        date = when.strftime("%d-%b-%Y %H:%M:%S +0000").encode()
        if draw(st.booleans()) and _quotable(body) and body:
            body_value = _quoted(body)
        else:
            body_value = b"{%d}\r\n" % len(body) + body
        date_value = draw(st.sampled_from([b'"' + date + b'"', b"{%d}\r\n" % len(date) + date]))
        items = [
            b"UID %d" % uid,
            b"RFC822.SIZE %d" % len(body),
            b"INTERNALDATE " + date_value,
            b"FLAGS (" + (b"\\Seen " if seen else b"") + b"$Junk)",
            b"BODY[] " + body_value,
        ]
        items = draw(st.permutations(items))
        cut = draw(st.integers(1, len(items)))
        groups = [items[:cut], items[cut:]] if cut < len(items) else [items]
        for group in groups:
            responses.append([b"* %d FETCH (" % number + b" ".join(group) + b")\r\n"])
        expected.append(Fetched(MessageMeta(uid, len(body), when, seen), body))
    responses = draw(st.permutations(responses))
    noise = [b"* %d EXISTS\r\n" % (len(uids) + 1), b"* OK [ALERT] hello\r\n", b"* 1 RECENT\r\n"]
    wire = b""
    for response in responses:
        if draw(st.booleans()):
            wire += draw(st.sampled_from(noise))
        wire += b"".join(response)
    return wire + b"A7 OK done\r\n", expected, set(uids)


@given(answers())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_legal_answer_reads_back_as_its_messages(
    answer: tuple[bytes, list[Fetched], set[int]],
) -> None:
    wire, expected, wanted = answer
    found, fetch = read(wire, wanted)
    assert sorted(found) == sorted(expected)
    assert fetch.report.delivered == wanted
    assert fetch.report.problems == {}
