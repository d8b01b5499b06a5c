"""How many messages enabling a connection would download: the selection rule of the poll
itself (``selection``), run against the server now, so that the estimate is what the first
poll then takes (unless mail arrives or goes in between)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from mailintake_shared.domain import Transport
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.graph import GraphMailbox
from mailintake_shared.mailbox.imap import ImapMailbox
from mailintake_shared.mailbox.pop3 import Pop3Mailbox
from mailintake_shared.mailbox.selection import Cursor, select_imap, select_pop3


class Confidence(StrEnum):
    EXACT = "exact"  # the poll's own rule: UIDs above the cursor, or UIDLs not stored
    UPPER_BOUND = "upper_bound"  # a new UIDVALIDITY: all are downloaded, known ones not stored


@dataclass(frozen=True)
class Estimate:
    messages: int
    confidence: Confidence
    known_mailbox: bool  # the store has a cursor (IMAP) or messages (POP3) for it
    uidvalidity: int | None = None
    baseline_uid: int | None = None  # fixed now for a new mailbox with a first-sync mode


def estimate(config: MailboxConfig, cursor: Cursor | None, known: Collection[str]) -> Estimate:
    view = config.view
    if view.transport is Transport.POP3:
        with Pop3Mailbox.open(config) as pop3:
            new = select_pop3(pop3.messages(), known)
        return Estimate(len(new), Confidence.EXACT, known_mailbox=bool(known))
    if view.transport is Transport.GRAPH:
        return _graph(config, cursor, known)
    with ImapMailbox.open(config) as imap:
        info = imap.select(config.folder)
        selection = select_imap(
            imap, info.uidvalidity, cursor, view.first_sync, view.first_sync_since
        )
    new_epoch = cursor is not None and cursor.uidvalidity != info.uidvalidity
    return Estimate(
        messages=len(selection.uids),
        confidence=Confidence.UPPER_BOUND if new_epoch else Confidence.EXACT,
        known_mailbox=cursor is not None,
        uidvalidity=info.uidvalidity,
        baseline_uid=selection.baseline_uid,
    )


def _graph(config: MailboxConfig, cursor: Cursor | None, known: Collection[str]) -> Estimate:
    """A new mailbox: the folder's count; a known one: the delta since its cursor, less what
    is stored (the poll's own rule)."""
    with GraphMailbox.open(config) as graph:
        if cursor is None or cursor.delta_link is None:
            return Estimate(graph.count(), Confidence.EXACT, known_mailbox=False)
        new = {
            item.id
            for page in graph.delta(cursor.delta_link)
            for item in page.items
            if not item.removed and item.id not in known
        }
    return Estimate(len(new), Confidence.EXACT, known_mailbox=True)
