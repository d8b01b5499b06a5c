"""Reading the FETCH responses of the bulk path, which bypasses imapclient's parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from imapclient.exceptions import IMAPClientAbortError, LoginError

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.errors import classify
from mailintake_shared.mailbox.imap import MessageMeta, _parse_bodies, _parse_meta, sequence_set


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


def test_bodies_are_matched_to_uids_wherever_the_uid_item_comes() -> None:
    data = [
        (b"1 (UID 10 BODY[] {5}", b"hello"),
        b")",
        (b"2 (BODY[] {5}", b"world"),
        b" UID 11)",
    ]
    assert _parse_bodies(data) == {10: b"hello", 11: b"world"}


def test_sequence_sets_are_compact() -> None:
    assert sequence_set([5, 1, 2, 3, 7, 8, 10]) == "1:3,5,7:8,10"


def test_a_server_that_asks_to_slow_down_is_throttling_not_failing() -> None:
    limit = LoginError("[LIMIT] Maximum number of connections from user+IP exceeded")
    assert classify(limit).kind is ErrorKind.THROTTLED
    assert classify(IMAPClientAbortError("BYE server shutting down")).kind is ErrorKind.THROTTLED
    assert classify(LoginError("[AUTHENTICATIONFAILED] bad")).kind is ErrorKind.AUTHENTICATION
    assert classify(IMAPClientAbortError("socket error: EOF")).kind is ErrorKind.SERVER_ERROR
