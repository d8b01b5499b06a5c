"""Which messages a poll downloads: one rule shared by the poll and the estimate before
enabling, so that the estimate is what the first poll then takes.

IMAP: the UIDs above the folder's cursor (the highest UID committed in this UIDVALIDITY).
A mailbox polled for the first time with a first-sync mode other than ``all`` gets a
*baseline*, its highest UID at that moment: messages up to the baseline are taken only if the
mode selects them (unseen, or arrived since a date; none for ``none``); everything above it is
new mail. POP3: every message whose UIDL is not stored yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date

from mailintake_shared.domain import FirstSync
from mailintake_shared.mailbox.imap import ImapMailbox, MessageMeta
from mailintake_shared.mailbox.pop3 import Pop3Message

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int | None
    last_uid: int
    baseline_uid: int | None = None
    delta_link: str | None = None  # Microsoft Graph: where the folder's next delta round starts


@dataclass(frozen=True)
class ImapSelection:
    uids: list[int]  # ascending
    baseline_uid: int | None  # set when this poll fixed the baseline (a new mailbox)
    start: int = 0  # the cursor the selection starts from: it lists the UIDs above it
    horizon: int = 0  # UIDs up to here are all selected or left out by the first-sync mode


def imap_criteria(mode: FirstSync, since: date | None) -> list[str] | None:
    """SEARCH criteria for messages up to the baseline; None: take none of them."""
    if mode is FirstSync.UNSEEN:
        return ["UNSEEN"]
    if mode is FirstSync.SINCE and since is not None:
        return ["SINCE", f"{since.day}-{_MONTHS[since.month - 1]}-{since.year}"]
    if mode is FirstSync.ALL:
        return []
    return None


def select_imap(
    mailbox: ImapMailbox,
    uidvalidity: int,
    cursor: Cursor | None,
    mode: FirstSync,
    since: date | None,
) -> ImapSelection:
    if cursor is not None and cursor.uidvalidity == uidvalidity:
        last, baseline, fixed = cursor.last_uid, cursor.baseline_uid, None
    elif cursor is None and mode is not FirstSync.ALL:
        last, baseline = 0, mailbox.highest_uid()
        fixed = baseline
    else:  # a new mailbox taken whole, or a new UIDVALIDITY epoch (the store dedups by content)
        last, baseline, fixed = 0, None, None
    if baseline is None or last >= baseline:
        return ImapSelection(mailbox.uids_after(last), fixed, last, last)
    newer = mailbox.uids_after(baseline)
    criteria = imap_criteria(mode, since)
    if criteria is None:
        older = []
    elif mailbox.search_unreliable:  # the same rule, on each message's metadata
        metas = mailbox.metadata_between(last + 1, baseline)
        older = [m.uid for m in metas if _selected(m, mode, since)]
    else:
        older = mailbox.uids_between(last + 1, baseline, criteria)
    return ImapSelection(older + newer, fixed, last, baseline)


def _selected(meta: MessageMeta, mode: FirstSync, since: date | None) -> bool:
    """``imap_criteria`` applied to one message: UNSEEN, or SINCE (the arrival date, RFC 3501
    §6.4.4, which disregards time and zone)."""
    if mode is FirstSync.UNSEEN:
        return not meta.seen
    if mode is FirstSync.SINCE and since is not None:
        return meta.internal_date is None or meta.internal_date.date() >= since
    return mode is FirstSync.ALL


def content_key(uidl: str, sha256: str) -> str:
    """The server id of a message whose UIDL is shared with others: the UIDL, a space (which
    no UIDL contains, RFC 1939 §7) and the first 16 hex digits of its SHA-256."""
    return f"{uidl} {sha256[:16]}"


def uidl_of(server_id: str) -> str:
    """The UIDL of a POP3 server id (``content_key`` or a plain UIDL)."""
    return server_id.split(" ", 1)[0]


def select_pop3(messages: list[Pop3Message], known: Collection[str]) -> list[Pop3Message]:
    """Messages whose UIDL is not stored (nor waiting in the queue as failed). Where one UIDL
    is listed for several messages, all of them while fewer are stored under it than listed:
    only their content tells which ones are new."""
    listed: dict[str, int] = defaultdict(int)
    for message in messages:
        listed[message.uidl] += 1
    stored: dict[str, int] = defaultdict(int)
    for server_id in known:
        stored[uidl_of(server_id)] += 1
    return [m for m in messages if stored.get(m.uidl, 0) < listed[m.uidl]]
