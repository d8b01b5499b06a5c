"""Reading the FETCH responses of the bulk path, which bypasses imapclient's parser."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.errors import classify
from mailintake_shared.mailbox.imap import (
    MessageMeta,
    _parse_meta,
    read_fetch_response,
    sequence_set,
)


@pytest.mark.parametrize(
    "line",
    [
        b'7 (UID 42 RFC822.SIZE 1234 INTERNALDATE "24-Nov-2026 07:16:00 +0100" FLAGS (\\Seen))',
        b'7 (FLAGS (\\Answered \\Seen) INTERNALDATE "24-Nov-2026 07:16:00 +0100" '
        b"RFC822.SIZE 1234 UID 42)",
    ],
    ids=["in the order asked", "in another order"],
)
def test_fetch_metadata_is_read_in_any_item_order(line: bytes) -> None:
    meta = _parse_meta(line)
    assert meta == MessageMeta(
        uid=42,
        size=1234,
        internal_date=datetime(2026, 11, 24, 7, 16, tzinfo=timezone(timedelta(hours=1))),
        seen=True,
    )


def test_unseen_message_metadata() -> None:
    meta = _parse_meta(
        b'1 (UID 5 RFC822.SIZE 10 INTERNALDATE "01-Jan-2026 00:00:00 +0000" FLAGS ())'
    )
    assert meta == MessageMeta(
        uid=5, size=10, internal_date=datetime(2026, 1, 1, tzinfo=UTC), seen=False
    )


def _read(response: bytes, wanted: set[int]) -> list[tuple[MessageMeta, bytes]]:
    stream = io.BytesIO(response)
    found = list(read_fetch_response(stream.readline, stream.read, b"A7", wanted))
    assert stream.read() == b"", "the response was not read to its end"
    return found


DATE = b'INTERNALDATE "01-Jan-2026 00:00:00 +0000"'
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_bulk_response_is_read_message_by_message_to_the_tagged_reply() -> None:
    response = (
        b"* 1 FETCH (UID 10 RFC822.SIZE 5 " + DATE + b" FLAGS (\\Seen) BODY[] {5}\r\nhello)\r\n"
        b"* 3 EXISTS\r\n"  # mail arriving meanwhile: passed over
        b"* 2 FETCH (BODY[] {7}\r\nwor)\r\nd FLAGS () " + DATE + b" RFC822.SIZE 7 UID 11)\r\n"
        b"* 3 FETCH (UID 12 RFC822.SIZE 0 " + DATE + b' FLAGS () BODY[] "")\r\n'
        b"* 4 FETCH (UID 13 RFC822.SIZE 0 " + DATE + b" FLAGS () BODY[] {0}\r\n)\r\n"
        b"* 5 FETCH (UID 99 RFC822.SIZE 1 " + DATE + b" FLAGS () BODY[] {1}\r\nx)\r\n"
        b"A7 OK Fetch completed.\r\n"
    )
    assert _read(response, {10, 11, 12, 13, 14}) == [
        (MessageMeta(10, 5, WHEN, True), b"hello"),
        (MessageMeta(11, 7, WHEN, False), b"wor)\r\nd"),  # a literal may hold anything
        (MessageMeta(12, 0, WHEN, False), b""),
        (MessageMeta(13, 0, WHEN, False), b""),
    ]  # UID 14 was expunged meanwhile; UID 99 was not asked for


def test_items_of_a_message_split_over_two_fetch_responses_are_joined() -> None:
    response = (
        b"* 1 FETCH (FLAGS (\\Seen) " + DATE + b" RFC822.SIZE 5)\r\n"
        b"* 2 FETCH (FLAGS ())\r\n"  # a flag update of another message
        b"* 1 FETCH (UID 10 BODY[] {5}\r\nhello)\r\n"
        b"A7 OK done\r\n"
    )
    assert _read(response, {10}) == [(MessageMeta(10, 5, WHEN, True), b"hello")]


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (b"A7 NO [SERVERBUG] Internal error\r\n", IMAPClientError),
        (b"* BYE Server shutting down.\r\n", IMAPClientAbortError),
        (b"* 1 FETCH (UID 10 BODY[] {50}\r\ncut short", IMAPClientAbortError),
        (b"* 1 FETCH (UID 10 BODY[] {5}\r\nhello)\r\n", IMAPClientAbortError),  # no reply
        (b"* 1 FETCH (BODY[] {5}\r\nhello)\r\nA7 OK\r\n", IMAPClientError),  # no UID
    ],
    ids=["refused", "bye", "closed inside a message", "closed before the reply", "no uid"],
)
def test_a_broken_bulk_response_raises(response: bytes, error: type[Exception]) -> None:
    stream = io.BytesIO(response)
    with pytest.raises(error):
        list(read_fetch_response(stream.readline, stream.read, b"A7", {10}))


def test_sequence_sets_are_compact() -> None:
    assert sequence_set([5, 1, 2, 3, 7, 8, 10]) == "1:3,5,7:8,10"


def test_a_server_that_asks_to_slow_down_is_throttling_not_failing() -> None:
    limit = LoginError("[LIMIT] Maximum number of connections from user+IP exceeded")
    assert classify(limit).kind is ErrorKind.THROTTLED
    assert classify(IMAPClientAbortError("BYE server shutting down")).kind is ErrorKind.THROTTLED
    assert classify(LoginError("[AUTHENTICATIONFAILED] bad")).kind is ErrorKind.AUTHENTICATION
    assert classify(IMAPClientAbortError("socket error: EOF")).kind is ErrorKind.SERVER_ERROR
